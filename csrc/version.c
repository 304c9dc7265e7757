/* The library's version, checked by ffi.lua against the Lua modules'. */
#include "internal.h"

const char *rp_version(void) { return RP_VERSION; }
