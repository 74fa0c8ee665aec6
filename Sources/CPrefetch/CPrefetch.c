// CPrefetch is a header of inline functions (include/CPrefetch.h); SwiftPM builds a C target from at least one
// source file.
#include "CPrefetch.h"
