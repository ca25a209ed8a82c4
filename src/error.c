/* error.c: weft_strerror() and weft_err_name(), generated from the one list
 * of codes in <weft/errno.h>.
 */
#include "weft.h"

const char* weft_strerror(int err) {
  switch (err) {
    case 0:
      return "success";
#define XX(code, msg) \
  case -code:         \
    return msg;
      WEFT_ERRNO_MAP(XX)
#undef XX
    default:
      return "unknown error";
  }
}

const char* weft_err_name(int err) {
  switch (err) {
    case 0:
      return "OK";
#define XX(code, msg) \
  case -code:         \
    return #code;
      WEFT_ERRNO_MAP(XX)
#undef XX
    default:
      return "UNKNOWN";
  }
}
