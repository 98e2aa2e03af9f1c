// The agent's version and the revision it was built from (set by the build).
#pragma once

namespace qcs::agent {

const char* agentVersion();
const char* agentRevision();

}  // namespace qcs::agent
