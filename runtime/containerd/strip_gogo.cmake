# Copies one containerd .proto file with everything protoc 3.21 cannot take (or does not need)
# removed: `import weak` lines (gogoproto, containerd's fieldpath plugin), file and message options
# of those plugins, and their field and enum-value options, dropping option lists left empty.
# The messages and services themselves are untouched, so the wire format is containerd's own.
#   cmake -DINPUT=<in.proto> -DOUTPUT=<out.proto> -P strip_gogo.cmake
if(NOT INPUT OR NOT OUTPUT)
  message(FATAL_ERROR "strip_gogo.cmake needs -DINPUT=... and -DOUTPUT=...")
endif()
file(READ "${INPUT}" text)
set(plugin_option "\\((gogoproto|containerd\\.plugin)\\.[A-Za-z0-9_]+\\)[ \t]*=[ \t]*(\"[^\"]*\"|[A-Za-z0-9_.]+)")
# import weak "gogoproto/gogo.proto"; and the fieldpath plugin's import
string(REGEX REPLACE "import[ \t]+weak[ \t]+\"[^\"]*\"[ \t]*;" "" text "${text}")
# cgroups' metrics.proto imports gogoproto without `weak`; it only brings the options stripped below.
string(REGEX REPLACE "import[ \t]+\"gogoproto/gogo\\.proto\"[ \t]*;" "" text "${text}")
# option (gogoproto.goproto_getters_all) = true;
string(REGEX REPLACE "option[ \t]+${plugin_option}[ \t]*;" "" text "${text}")
# [(gogoproto.stdtime) = true, (gogoproto.nullable) = false] -> [] -> nothing
string(REGEX REPLACE "${plugin_option}[ \t]*,?[ \t]*" "" text "${text}")
string(REGEX REPLACE ",[ \t]*\\]" "]" text "${text}")
string(REGEX REPLACE "[ \t]*\\[[ \t]*\\]" "" text "${text}")
if(text MATCHES "gogoproto|containerd\\.plugin")
  string(REGEX MATCH "[^\n]*(gogoproto|containerd\\.plugin)[^\n]*" leftover "${text}")
  message(FATAL_ERROR "${INPUT}: a plugin option was left after stripping: ${leftover}")
endif()
file(WRITE "${OUTPUT}.tmp" "${text}")
file(RENAME "${OUTPUT}.tmp" "${OUTPUT}")
