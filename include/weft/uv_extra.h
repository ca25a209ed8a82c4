/* weft/uv_extra.h: UDP, DNS, child processes and signals for fibers.
 * Included by weft_uv.h; see there for the conventions. */
#ifndef WEFT_UV_EXTRA_H_
#define WEFT_UV_EXTRA_H_

#endif /* WEFT_UV_EXTRA_H_ */
