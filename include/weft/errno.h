/* weft error codes: every code weft's core returns, listed once.
 *
 * Functions return 0 (or a count) on success and a negative errno on failure,
 * libuv's convention. WEFT_ERRNO_MAP(XX) expands XX(name, message) for each
 * code; weft_strerror() and weft_err_name() are generated from it.
 */
#ifndef WEFT_ERRNO_H_
#define WEFT_ERRNO_H_

#include <errno.h>

#define WEFT_ERRNO_MAP(XX)                                                     \
  XX(EINVAL, "invalid argument")                                               \
  XX(ENOMEM, "out of memory")                                                  \
  XX(EPERM, "operation not permitted from this context (not on a weft fiber)") \
  XX(EAGAIN, "resource temporarily unavailable")                               \
  XX(EBUSY, "resource busy")                                                   \
  XX(ESHUTDOWN, "runtime is shutting down")                                    \
  XX(EDEADLK, "operation would deadlock")                                      \
  XX(ERANGE, "value out of range")                                             \
  XX(ENOSYS, "not supported on this platform")                                 \
  XX(ECANCELED, "operation canceled")                                          \
  XX(ETIMEDOUT, "operation timed out")                                         \
  XX(EBADMSG, "bad value in a WEFT_* environment variable (stderr names it)")

#define WEFT_EINVAL (-EINVAL)
#define WEFT_ENOMEM (-ENOMEM)
#define WEFT_EPERM (-EPERM)
#define WEFT_EAGAIN (-EAGAIN)
#define WEFT_EBUSY (-EBUSY)
#define WEFT_ESHUTDOWN (-ESHUTDOWN)
#define WEFT_EDEADLK (-EDEADLK)
#define WEFT_ERANGE (-ERANGE)
#define WEFT_ENOSYS (-ENOSYS)
#define WEFT_ECANCELED (-ECANCELED)
#define WEFT_ETIMEDOUT (-ETIMEDOUT)
#define WEFT_EBADMSG (-EBADMSG)

#endif /* WEFT_ERRNO_H_ */
