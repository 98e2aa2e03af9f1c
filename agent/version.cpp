#include "agent/version.h"

#include "qcs_revision.h"

namespace qcs::agent {

const char* agentVersion() { return QCS_VERSION; }
const char* agentRevision() { return QCS_REVISION; }

}  // namespace qcs::agent
