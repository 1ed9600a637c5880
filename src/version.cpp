#include "rmt/version.h"

namespace rmt {

std::string version() { return RMT_VERSION_STRING; }

}  // namespace rmt
