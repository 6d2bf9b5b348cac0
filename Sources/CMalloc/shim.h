// glibc's malloc introspection and trimming (malloc_usable_size, malloc_trim, mallopt):
// memory accounting and handing freed memory back after FLUSHALL.
#include <malloc.h>
