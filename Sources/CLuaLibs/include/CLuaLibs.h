#ifndef SB_CLUALIBS_H
#define SB_CLUALIBS_H

#include <lua5.1/lua.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Registers the global table `struct` (pack/unpack/size); returns 1. */
int sb_luaopen_struct(lua_State *L);

/* Registers the global table `cmsgpack` (pack/unpack/unpack_one/unpack_limit);
 * returns 1. */
int sb_luaopen_cmsgpack(lua_State *L);

#ifdef __cplusplus
}
#endif

#endif /* SB_CLUALIBS_H */
