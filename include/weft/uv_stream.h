/* weft/uv_stream.h: TCP, pipes and Unix domain sockets for fibers. Included
 * by weft_uv.h; see there for the conventions. */
#ifndef WEFT_UV_STREAM_H_
#define WEFT_UV_STREAM_H_

#endif /* WEFT_UV_STREAM_H_ */
