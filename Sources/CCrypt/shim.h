// libxcrypt (Debian's libcrypt-dev): crypt_r verifies bcrypt, SHA-crypt and yescrypt hashes;
// crypt_gensalt_rn makes settings for new bcrypt hashes.
#include <crypt.h>
