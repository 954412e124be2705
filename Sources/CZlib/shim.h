// zlib (Debian's zlib1g-dev): raw DEFLATE streams for permessage-deflate (RFC 7692).
#include <zlib.h>
