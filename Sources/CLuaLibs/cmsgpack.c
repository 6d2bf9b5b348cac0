/*
 * cmsgpack.c -- MessagePack encoder/decoder for Lua 5.1, API compatible with
 * the `cmsgpack` module Redis exposes to EVAL scripts.
 *
 *   cmsgpack.pack(v1, ...)                  -> string (encodings concatenated)
 *   cmsgpack.unpack(s)                      -> every value in s
 *   cmsgpack.unpack_one(s [, off])          -> nextoff, value
 *   cmsgpack.unpack_limit(s, n [, off])     -> nextoff, up to n values
 *   (nextoff is -1 once the whole input has been consumed; offsets are
 *    0-based byte offsets)
 *
 * Type mapping (encode): integral numbers in int64 range -> smallest integer
 * encoding, other numbers -> float32 when exact, else float64; strings ->
 * fixstr/str8/str16/str32; tables with exactly the keys 1..n -> arrays, other
 * tables -> maps; booleans; everything else -> nil. Tables nested deeper than
 * SB_MP_MAX_NESTING levels are encoded as nil.
 *
 * Written from scratch for Strongbox. The decoder never reads past the input,
 * never preallocates from declared lengths, and grows the Lua stack only
 * through lua_checkstack, which bounds nesting (and so C recursion) by
 * LUAI_MAXCSTACK.
 */

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <lua5.1/lua.h>
#include <lua5.1/lauxlib.h>

#include "CLuaLibs.h"

#define SB_MP_MAX_NESTING 16
#define SB_MP_BUF_META "sb.cmsgpack.buffer"

/* ------------------------------------------------------------------------ */
/* Output buffer: a userdata on the Lua stack owning memory obtained from the
 * state's allocator, released by __gc, so errors raised mid-encode never
 * leak. */

typedef struct {
  unsigned char *data;
  size_t len;
  size_t cap;
} sb_mpbuf;

static int sb_mpbuf_gc(lua_State *L) {
  sb_mpbuf *b = (sb_mpbuf *)lua_touserdata(L, 1);
  if (b != NULL && b->data != NULL) {
    void *ud;
    lua_Alloc alloc = lua_getallocf(L, &ud);
    alloc(ud, b->data, b->cap, 0);
    b->data = NULL;
    b->len = b->cap = 0;
  }
  return 0;
}

static sb_mpbuf *sb_mpbuf_push(lua_State *L) {
  sb_mpbuf *b = (sb_mpbuf *)lua_newuserdata(L, sizeof(sb_mpbuf));
  b->data = NULL;
  b->len = b->cap = 0;
  if (luaL_newmetatable(L, SB_MP_BUF_META)) {
    lua_pushcfunction(L, sb_mpbuf_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return b;
}

static void sb_mpbuf_add(lua_State *L, sb_mpbuf *b, const void *src,
                         size_t n) {
  if (b->cap - b->len < n) {
    size_t need = b->len + n;
    size_t ncap = b->cap ? b->cap : 128;
    void *ud;
    lua_Alloc alloc;
    void *np;
    if (need < b->len) luaL_error(L, "not enough memory");
    while (ncap < need) {
      if (ncap > SIZE_MAX / 2) {
        ncap = need;
        break;
      }
      ncap *= 2;
    }
    alloc = lua_getallocf(L, &ud);
    np = alloc(ud, b->data, b->cap, ncap);
    if (np == NULL) luaL_error(L, "not enough memory");
    b->data = (unsigned char *)np;
    b->cap = ncap;
  }
  memcpy(b->data + b->len, src, n);
  b->len += n;
}

/* ------------------------------------------------------------------------ */
/* Encoder */

static void sb_be_store(unsigned char *out, uint64_t v, int nbytes) {
  int i;
  for (i = nbytes - 1; i >= 0; i--) {
    out[i] = (unsigned char)(v & 0xffu);
    v >>= 8;
  }
}

static void sb_mp_put_head(lua_State *L, sb_mpbuf *b, unsigned char tag,
                           uint64_t v, int nbytes) {
  unsigned char out[9];
  out[0] = tag;
  sb_be_store(out + 1, v, nbytes);
  sb_mpbuf_add(L, b, out, (size_t)nbytes + 1);
}

static void sb_mp_put_int(lua_State *L, sb_mpbuf *b, int64_t n) {
  if (n >= 0) {
    uint64_t u = (uint64_t)n;
    if (u <= 0x7f) sb_mp_put_head(L, b, (unsigned char)u, 0, 0);
    else if (u <= 0xff) sb_mp_put_head(L, b, 0xcc, u, 1);
    else if (u <= 0xffff) sb_mp_put_head(L, b, 0xcd, u, 2);
    else if (u <= 0xffffffffu) sb_mp_put_head(L, b, 0xce, u, 4);
    else sb_mp_put_head(L, b, 0xcf, u, 8);
  } else {
    uint64_t bits = (uint64_t)n; /* two's complement bit pattern */
    if (n >= -32) sb_mp_put_head(L, b, (unsigned char)(bits & 0xffu), 0, 0);
    else if (n >= -128) sb_mp_put_head(L, b, 0xd0, bits, 1);
    else if (n >= -32768) sb_mp_put_head(L, b, 0xd1, bits, 2);
    else if (n >= -2147483647LL - 1) sb_mp_put_head(L, b, 0xd2, bits, 4);
    else sb_mp_put_head(L, b, 0xd3, bits, 8);
  }
}

static void sb_mp_put_double(lua_State *L, sb_mpbuf *b, double d) {
  int fits_float = 0;
  float f = 0.0f;
  if (isnan(d)) fits_float = 0;
  else if (isinf(d)) { f = (float)d; fits_float = 1; }
  else if (fabs(d) <= FLT_MAX) { f = (float)d; fits_float = ((double)f == d); }
  if (fits_float) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    sb_mp_put_head(L, b, 0xca, bits, 4);
  } else {
    uint64_t bits;
    memcpy(&bits, &d, 8);
    sb_mp_put_head(L, b, 0xcb, bits, 8);
  }
}

static void sb_mp_put_number(lua_State *L, sb_mpbuf *b, lua_Number n) {
  double d = (double)n;
  if (d >= -9223372036854775808.0 && d < 9223372036854775808.0 &&
      floor(d) == d)
    sb_mp_put_int(L, b, (int64_t)d);
  else
    sb_mp_put_double(L, b, d);
}

static void sb_mp_put_string(lua_State *L, sb_mpbuf *b, const char *s,
                             size_t len) {
  if (len < 32) sb_mp_put_head(L, b, (unsigned char)(0xa0u | len), 0, 0);
  else if (len <= 0xff) sb_mp_put_head(L, b, 0xd9, len, 1);
  else if (len <= 0xffff) sb_mp_put_head(L, b, 0xda, len, 2);
  else sb_mp_put_head(L, b, 0xdb, (uint64_t)len & 0xffffffffu, 4);
  sb_mpbuf_add(L, b, s, len);
}

static void sb_mp_put_container(lua_State *L, sb_mpbuf *b, size_t n,
                                int is_map) {
  if (n < 16)
    sb_mp_put_head(L, b, (unsigned char)((is_map ? 0x80u : 0x90u) | n), 0, 0);
  else if (n <= 0xffff)
    sb_mp_put_head(L, b, is_map ? 0xde : 0xdc, n, 2);
  else
    sb_mp_put_head(L, b, is_map ? 0xdf : 0xdd, (uint64_t)n & 0xffffffffu, 4);
}

/* Encoder state. `slack` mirrors Redis's stack layout for the limit checks:
 * Redis leaves one encoded string per already-packed argument on the Lua
 * stack while we keep a single buffer userdata instead, so while encoding
 * argument i our stack is i-2 slots lower than Redis's. Every luaL_checkstack
 * asks for that many extra slots, which makes "stack overflow (...)" errors
 * appear at exactly the same points as in Redis (near LUAI_MAXCSTACK). */
typedef struct {
  sb_mpbuf *buf;
  int slack;
} sb_mpenc;

static void sb_mp_checkstack(lua_State *L, const sb_mpenc *e, int n,
                             const char *what) {
  luaL_checkstack(L, n + e->slack, what);
}

static void sb_mp_encode(lua_State *L, sb_mpenc *e, int level);

/* True when the table at the top has exactly the keys 1..n (n may be 0). */
static int sb_mp_is_array(lua_State *L, const sb_mpenc *e) {
  int top = lua_gettop(L);
  int count = 0, max = 0;
  sb_mp_checkstack(L, e, 2, "in function table_is_an_array");
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_Number k;
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TNUMBER) {
      lua_settop(L, top);
      return 0;
    }
    k = lua_tonumber(L, -1);
    if (!(k > 0 && k <= (lua_Number)INT_MAX && floor(k) == k)) {
      lua_settop(L, top);
      return 0;
    }
    if ((int)k > max) max = (int)k;
    count++;
  }
  lua_settop(L, top);
  return max == count;
}

static void sb_mp_encode_table(lua_State *L, sb_mpenc *e, int level) {
  if (sb_mp_is_array(L, e)) {
    size_t n = lua_objlen(L, -1), i;
    sb_mp_put_container(L, e->buf, n, 0);
    sb_mp_checkstack(L, e, 1, "in function mp_encode_lua_table_as_array");
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, (int)i);
      sb_mp_encode(L, e, level + 1);
    }
  } else {
    size_t n = 0;
    sb_mp_checkstack(L, e, 3, "in function mp_encode_lua_table_as_map");
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      lua_pop(L, 1);
      n++;
    }
    sb_mp_put_container(L, e->buf, n, 1);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      /* ... table key value */
      lua_pushvalue(L, -2);
      sb_mp_encode(L, e, level + 1); /* key copy */
      sb_mp_encode(L, e, level + 1); /* value */
    }
  }
}

/* Encodes the value at the top of the stack and pops it. */
static void sb_mp_encode(lua_State *L, sb_mpenc *e, int level) {
  int t = lua_type(L, -1);
  if (t == LUA_TTABLE && level >= SB_MP_MAX_NESTING) t = LUA_TNIL;
  switch (t) {
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, -1, &len);
      sb_mp_put_string(L, e->buf, s, len);
      break;
    }
    case LUA_TBOOLEAN:
      sb_mp_put_head(L, e->buf, lua_toboolean(L, -1) ? 0xc3 : 0xc2, 0, 0);
      break;
    case LUA_TNUMBER:
      sb_mp_put_number(L, e->buf, lua_tonumber(L, -1));
      break;
    case LUA_TTABLE:
      sb_mp_encode_table(L, e, level);
      break;
    default:
      sb_mp_put_head(L, e->buf, 0xc0, 0, 0);
      break;
  }
  lua_pop(L, 1);
}

static int sb_mp_pack(lua_State *L) {
  int nargs = lua_gettop(L);
  int i;
  sb_mpenc e;
  if (nargs == 0)
    return luaL_argerror(L, 0, "MessagePack pack needs input.");
  if (!lua_checkstack(L, nargs))
    return luaL_argerror(L, 0, "Too many arguments for MessagePack pack.");
  e.buf = sb_mpbuf_push(L);
  for (i = 1; i <= nargs; i++) {
    e.slack = i >= 2 ? i - 2 : 0;
    sb_mp_checkstack(L, &e, 1, "in function mp_check");
    lua_pushvalue(L, i);
    sb_mp_encode(L, &e, 0);
  }
  lua_pushlstring(L, e.buf->data != NULL ? (const char *)e.buf->data : "",
                  e.buf->len);
  return 1;
}

/* ------------------------------------------------------------------------ */
/* Decoder */

enum { SB_MP_OK = 0, SB_MP_EOF = 1, SB_MP_BADFMT = 2 };

typedef struct {
  const unsigned char *p;
  size_t left;
  int err;
} sb_mpcur;

static uint64_t sb_be_load(const unsigned char *p, int nbytes) {
  uint64_t v = 0;
  int i;
  for (i = 0; i < nbytes; i++) v = (v << 8) | p[i];
  return v;
}

static int64_t sb_u2s64(uint64_t v) {
  if (v <= (uint64_t)INT64_MAX) return (int64_t)v;
  return -(int64_t)(~v) - 1;
}

/* Sign-extends the low nbytes*8 bits of v. */
static int64_t sb_sext(uint64_t v, int nbytes) {
  uint64_t sign = UINT64_C(1) << (nbytes * 8 - 1);
  if (nbytes >= 8) return sb_u2s64(v);
  if (v & sign) return sb_u2s64(v | ~((sign << 1) - 1));
  return (int64_t)v;
}

static void sb_mp_decode(lua_State *L, sb_mpcur *c);

static void sb_mp_decode_array(lua_State *L, sb_mpcur *c, uint64_t n) {
  lua_Number idx = 1;
  lua_newtable(L);
  luaL_checkstack(L, 1, "in function mp_decode_to_lua_array");
  while (n-- > 0) {
    lua_pushnumber(L, idx);
    idx += 1;
    sb_mp_decode(L, c);
    if (c->err) return;
    lua_settable(L, -3);
  }
}

static void sb_mp_decode_map(lua_State *L, sb_mpcur *c, uint64_t n) {
  lua_newtable(L);
  while (n-- > 0) {
    sb_mp_decode(L, c); /* key */
    if (c->err) return;
    sb_mp_decode(L, c); /* value */
    if (c->err) return;
    lua_settable(L, -3);
  }
}

/* Decodes one value at the cursor and pushes it. On failure sets c->err
 * (values already pushed are left for the caller to discard). */
static void sb_mp_decode(lua_State *L, sb_mpcur *c) {
  unsigned char tag;
  if (c->left < 1) {
    c->err = SB_MP_EOF;
    return;
  }
  luaL_checkstack(L, 1,
                  "too many return values at once; "
                  "use unpack_one or unpack_limit instead.");
  tag = c->p[0];

  /* Fixed-width scalars: tag + nbytes of payload. */
  {
    int nbytes = -1;
    switch (tag) {
      case 0xcc: case 0xd0: nbytes = 1; break;
      case 0xcd: case 0xd1: nbytes = 2; break;
      case 0xce: case 0xd2: case 0xca: nbytes = 4; break;
      case 0xcf: case 0xd3: case 0xcb: nbytes = 8; break;
      default: break;
    }
    if (nbytes > 0) {
      uint64_t v;
      if (c->left < (size_t)nbytes + 1) {
        c->err = SB_MP_EOF;
        return;
      }
      v = sb_be_load(c->p + 1, nbytes);
      switch (tag) {
        case 0xcc: case 0xcd: case 0xce:
          lua_pushnumber(L, (lua_Number)v);
          break;
        case 0xcf: /* Redis pushes uint64 through a signed integer. */
        case 0xd3:
          lua_pushnumber(L, (lua_Number)sb_u2s64(v));
          break;
        case 0xd0: case 0xd1: case 0xd2:
          lua_pushnumber(L, (lua_Number)sb_sext(v, nbytes));
          break;
        case 0xca: {
          uint32_t bits = (uint32_t)v;
          float f;
          memcpy(&f, &bits, 4);
          lua_pushnumber(L, (lua_Number)f);
          break;
        }
        default: { /* 0xcb */
          double d;
          memcpy(&d, &v, 8);
          lua_pushnumber(L, (lua_Number)d);
          break;
        }
      }
      c->p += nbytes + 1;
      c->left -= (size_t)nbytes + 1;
      return;
    }
  }

  switch (tag) {
    case 0xc0:
      lua_pushnil(L);
      c->p++;
      c->left--;
      return;
    case 0xc2:
    case 0xc3:
      lua_pushboolean(L, tag == 0xc3);
      c->p++;
      c->left--;
      return;
    case 0xd9: case 0xda: case 0xdb: { /* str 8/16/32 */
      int hb = tag == 0xd9 ? 1 : (tag == 0xda ? 2 : 4);
      size_t n;
      if (c->left < (size_t)hb + 1) {
        c->err = SB_MP_EOF;
        return;
      }
      n = (size_t)sb_be_load(c->p + 1, hb);
      if (c->left - ((size_t)hb + 1) < n) {
        c->err = SB_MP_EOF;
        return;
      }
      lua_pushlstring(L, (const char *)c->p + hb + 1, n);
      c->p += (size_t)hb + 1 + n;
      c->left -= (size_t)hb + 1 + n;
      return;
    }
    case 0xdc: case 0xdd: case 0xde: case 0xdf: { /* array/map 16/32 */
      int hb = (tag == 0xdc || tag == 0xde) ? 2 : 4;
      uint64_t n;
      if (c->left < (size_t)hb + 1) {
        c->err = SB_MP_EOF;
        return;
      }
      n = sb_be_load(c->p + 1, hb);
      c->p += hb + 1;
      c->left -= (size_t)hb + 1;
      if (tag == 0xdc || tag == 0xdd) sb_mp_decode_array(L, c, n);
      else sb_mp_decode_map(L, c, n);
      return;
    }
    default:
      break;
  }

  if ((tag & 0x80) == 0) { /* positive fixint */
    lua_pushnumber(L, (lua_Number)tag);
    c->p++;
    c->left--;
  } else if ((tag & 0xe0) == 0xe0) { /* negative fixint */
    lua_pushnumber(L, (lua_Number)((int)tag - 256));
    c->p++;
    c->left--;
  } else if ((tag & 0xe0) == 0xa0) { /* fixstr */
    size_t n = tag & 0x1f;
    if (c->left - 1 < n) {
      c->err = SB_MP_EOF;
      return;
    }
    lua_pushlstring(L, (const char *)c->p + 1, n);
    c->p += 1 + n;
    c->left -= 1 + n;
  } else if ((tag & 0xf0) == 0x90) { /* fixarray */
    c->p++;
    c->left--;
    sb_mp_decode_array(L, c, tag & 0x0f);
  } else if ((tag & 0xf0) == 0x80) { /* fixmap */
    c->p++;
    c->left--;
    sb_mp_decode_map(L, c, tag & 0x0f);
  } else {
    c->err = SB_MP_BADFMT; /* 0xc1, bin, ext: not supported (as Redis) */
  }
}

static int sb_mp_unpack_full(lua_State *L, lua_Integer limit,
                             lua_Integer offset) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  int decode_all = (limit == 0 && offset == 0);
  sb_mpcur c;
  int cnt;

  /* Redis formats these 64-bit values with %d (so only their low 32 bits
   * show) and prints the input length where it names the limit. */
  if (offset < 0 || limit < 0)
    return luaL_error(L,
                      "Invalid request to unpack with offset of %d and "
                      "limit of %d.",
                      (int)offset, (int)len);
  if ((size_t)offset > len)
    return luaL_error(L, "Start offset %d greater than input length %d.",
                      (int)offset, (int)len);
  if (decode_all) limit = INT_MAX;

  c.p = (const unsigned char *)s + offset;
  c.left = len - (size_t)offset;
  c.err = SB_MP_OK;

  for (cnt = 0; c.left > 0 && cnt < limit; cnt++) {
    sb_mp_decode(L, &c);
    if (c.err == SB_MP_EOF) return luaL_error(L, "Missing bytes in input.");
    if (c.err == SB_MP_BADFMT)
      return luaL_error(L, "Bad data format in input.");
  }

  if (!decode_all) {
    int next = (int)(len - c.left);
    luaL_checkstack(L, 1, "in function mp_unpack_full");
    lua_pushinteger(L, c.left == 0 ? -1 : next);
    lua_insert(L, 2);
    cnt++;
  }
  return cnt;
}

static int sb_mp_unpack(lua_State *L) {
  return sb_mp_unpack_full(L, 0, 0);
}

static int sb_mp_unpack_one(lua_State *L) {
  lua_Integer offset = luaL_optinteger(L, 2, 0);
  if (lua_gettop(L) > 1) lua_settop(L, 1);
  return sb_mp_unpack_full(L, 1, offset);
}

static int sb_mp_unpack_limit(lua_State *L) {
  lua_Integer limit = luaL_checkinteger(L, 2);
  lua_Integer offset = luaL_optinteger(L, 3, 0);
  if (lua_gettop(L) > 1) lua_settop(L, 1);
  return sb_mp_unpack_full(L, limit, offset);
}

static const luaL_Reg sb_mp_funcs[] = {
  {"pack", sb_mp_pack},
  {"unpack", sb_mp_unpack},
  {"unpack_one", sb_mp_unpack_one},
  {"unpack_limit", sb_mp_unpack_limit},
  {NULL, NULL}
};

int sb_luaopen_cmsgpack(lua_State *L) {
  const luaL_Reg *r;
  lua_newtable(L);
  for (r = sb_mp_funcs; r->name != NULL; r++) {
    lua_pushcfunction(L, r->func);
    lua_setfield(L, -2, r->name);
  }
  lua_pushliteral(L, "cmsgpack");
  lua_setfield(L, -2, "_NAME");
  lua_pushliteral(L, "lua-cmsgpack 0.4.0");
  lua_setfield(L, -2, "_VERSION");
  lua_pushliteral(L, "Copyright (C) 2012, Salvatore Sanfilippo");
  lua_setfield(L, -2, "_COPYRIGHT");
  lua_pushliteral(L, "MessagePack C implementation for Lua");
  lua_setfield(L, -2, "_DESCRIPTION");
  lua_pushvalue(L, -1);
  lua_setglobal(L, "cmsgpack");
  return 1;
}
