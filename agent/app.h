// The command line and the composition root: builds the object graph for each command.
#pragma once

namespace qcs::agent {

// Exit codes of the agent.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitConfig = 78;  // EX_CONFIG: systemd's RestartPreventExitStatus

int runMain(int argc, char** argv);

}  // namespace qcs::agent
