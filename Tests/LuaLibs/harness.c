/*
 * Test harness for Sources/CLuaLibs: runs a Lua file the way Redis runs an
 * EVAL body (chunk name "@user_script", libraries base/string/table/math plus
 * struct and cmsgpack) and prints the result like `redis-cli --raw` does for
 * string and integer replies, or "ERR <message>" when the script raises.
 *
 *   usage: harness script.lua
 */
#include <stdio.h>
#include <stdlib.h>

#include <lua5.1/lua.h>
#include <lua5.1/lauxlib.h>
#include <lua5.1/lualib.h>

#include "CLuaLibs.h"

static void open_lib(lua_State *L, lua_CFunction f, const char *name) {
  lua_pushcfunction(L, f);
  lua_pushstring(L, name);
  lua_call(L, 1, 0);
}

static char *read_file(const char *path, size_t *len) {
  FILE *fp = fopen(path, "rb");
  char *buf = NULL;
  size_t cap = 0, n = 0;
  if (fp == NULL) return NULL;
  for (;;) {
    size_t got;
    if (cap - n < 4096) {
      char *nb = realloc(buf, cap + 65536);
      if (nb == NULL) {
        free(buf);
        fclose(fp);
        return NULL;
      }
      buf = nb;
      cap += 65536;
    }
    got = fread(buf + n, 1, cap - n, fp);
    n += got;
    if (got == 0) break;
  }
  fclose(fp);
  *len = n;
  return buf;
}

int main(int argc, char **argv) {
  lua_State *L;
  char *src;
  size_t len = 0;
  int rc = 0, i, top;
  if (argc != 2) {
    fprintf(stderr, "usage: %s script.lua\n", argv[0]);
    return 2;
  }
  src = read_file(argv[1], &len);
  if (src == NULL) {
    perror(argv[1]);
    return 2;
  }
  L = luaL_newstate();
  if (L == NULL) return 2;
  open_lib(L, luaopen_base, "");
  open_lib(L, luaopen_table, LUA_TABLIBNAME);
  open_lib(L, luaopen_string, LUA_STRLIBNAME);
  open_lib(L, luaopen_math, LUA_MATHLIBNAME);
  sb_luaopen_struct(L);
  sb_luaopen_cmsgpack(L);
  lua_settop(L, 0);

  if (luaL_loadbuffer(L, src, len, "@user_script") != 0 ||
      lua_pcall(L, 0, LUA_MULTRET, 0) != 0) {
    size_t elen;
    const char *e = lua_tolstring(L, -1, &elen);
    fputs("ERR ", stdout);
    if (e != NULL) fwrite(e, 1, elen, stdout);
    else fputs("(non-string error)", stdout);
    fputc('\n', stdout);
    rc = 1;
  } else {
    top = lua_gettop(L);
    for (i = 1; i <= (top > 0 ? 1 : 0); i++) { /* Redis uses the 1st value */
      switch (lua_type(L, i)) {
        case LUA_TSTRING: {
          size_t sl;
          const char *s = lua_tolstring(L, i, &sl);
          fwrite(s, 1, sl, stdout);
          break;
        }
        case LUA_TNUMBER: { /* Redis truncates numbers to integer replies */
          lua_Number d = lua_tonumber(L, i);
          if (d > -9.2e18 && d < 9.2e18) printf("%lld", (long long)d);
          else printf("%.17g", (double)d);
          break;
        }
        case LUA_TBOOLEAN:
          fputs(lua_toboolean(L, i) ? "1" : "", stdout);
          break;
        default:
          printf("<%s>", luaL_typename(L, i));
          break;
      }
    }
    fputc('\n', stdout);
  }
  lua_close(L);
  free(src);
  return rc;
}
