/* weft version, as numbers for #if and as a string. */
#ifndef WEFT_VERSION_H_
#define WEFT_VERSION_H_

#define WEFT_VERSION_MAJOR 0
#define WEFT_VERSION_MINOR 1
#define WEFT_VERSION_PATCH 0
#define WEFT_VERSION_STRING "0.1.0"
#define WEFT_VERSION_HEX \
  ((WEFT_VERSION_MAJOR << 16) | (WEFT_VERSION_MINOR << 8) | WEFT_VERSION_PATCH)

#endif /* WEFT_VERSION_H_ */
