/*
 * struct.c -- binary packing library for Lua 5.1, API compatible with the
 * `struct` module Redis exposes to EVAL scripts.
 *
 *   struct.pack(fmt, v1, v2, ...)    -> string
 *   struct.unpack(fmt, s [, pos])    -> v1, v2, ..., nextpos
 *   struct.size(fmt)                 -> size in bytes
 *
 * Format characters:
 *   '>' big endian            '<' little endian        ' ' ignored
 *   '![n]' max alignment n (default: natural alignment of double)
 *   'x' one zero byte of padding
 *   'b'/'B' signed/unsigned char   'h'/'H' short   'l'/'L' long
 *   'T' size_t   'i[n]'/'I[n]' signed/unsigned integer of n bytes
 *   'c[n]' fixed string of n bytes ('c0': whole string when packing,
 *          length taken from the previous value when unpacking)
 *   's' zero-terminated string   'f' float   'd' double
 *
 * Written from scratch for Strongbox. Numeric conversions that are
 * undefined in ISO C (out-of-range double -> integer) are performed
 * explicitly with the results an x86-64 build of Redis produces, so the
 * library is free of undefined behaviour yet byte-compatible.
 */

#include <ctype.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <lua5.1/lua.h>
#include <lua5.1/lauxlib.h>

#include "CLuaLibs.h"

#define SB_STRUCT_MAXINTSIZE 32

struct sb_struct_align_probe {
  char c;
  double d;
};
#define SB_STRUCT_DEFAULT_ALIGN offsetof(struct sb_struct_align_probe, d)

enum { SB_ORDER_BIG = 0, SB_ORDER_LITTLE = 1 };

typedef struct {
  int order;    /* SB_ORDER_BIG or SB_ORDER_LITTLE */
  size_t align; /* maximum alignment, power of two >= 1 */
} sb_fmtstate;

static int sb_host_order(void) {
  const uint16_t probe = 1;
  unsigned char first;
  memcpy(&first, &probe, 1);
  return first ? SB_ORDER_LITTLE : SB_ORDER_BIG;
}

static void sb_fmt_init(sb_fmtstate *st) {
  st->order = sb_host_order();
  st->align = 1;
}

/* ---- well-defined emulation of x86-64 double -> integer conversions ---- */

#define SB_TWO63 9223372036854775808.0

/* (int64_t)d as cvttsd2si does it: out of range / NaN -> INT64_MIN. */
static uint64_t sb_d2i64bits(double d) {
  if (d >= -SB_TWO63 && d < SB_TWO63) return (uint64_t)(int64_t)d;
  return UINT64_C(0x8000000000000000);
}

/* (uint64_t)d as gcc emits it on x86-64. */
static uint64_t sb_d2u64(double d) {
  if (d >= SB_TWO63)
    return sb_d2i64bits(d - SB_TWO63) ^ UINT64_C(0x8000000000000000);
  return sb_d2i64bits(d);
}

/* ---- format parsing ---- */

static int sb_readnum(lua_State *L, const char **fmt, int dflt) {
  int v = 0;
  if (!isdigit((unsigned char)**fmt)) return dflt;
  while (isdigit((unsigned char)**fmt)) {
    int digit = **fmt - '0';
    if (v > INT_MAX / 10 || v * 10 > INT_MAX - digit)
      luaL_error(L, "integral size overflow");
    v = v * 10 + digit;
    (*fmt)++;
  }
  return v;
}

/* Size of one item; consumes an optional count after 'c', 'i', 'I'. */
static size_t sb_itemsize(lua_State *L, int opt, const char **fmt) {
  switch (opt) {
    case 'b': case 'B': return sizeof(char);
    case 'h': case 'H': return sizeof(short);
    case 'l': case 'L': return sizeof(long);
    case 'T': return sizeof(size_t);
    case 'f': return sizeof(float);
    case 'd': return sizeof(double);
    case 'x': return 1;
    case 'c': return (size_t)sb_readnum(L, fmt, 1);
    case 'i': case 'I': {
      int n = sb_readnum(L, fmt, (int)sizeof(int));
      if (n > SB_STRUCT_MAXINTSIZE)
        luaL_error(L, "integral size %d is larger than limit of %d", n,
                   SB_STRUCT_MAXINTSIZE);
      return (size_t)n;
    }
    default: return 0;
  }
}

/* Padding needed before an item of `size` bytes placed at offset `at`. */
static size_t sb_padding(size_t at, const sb_fmtstate *st, int opt,
                         size_t size) {
  if (size == 0 || opt == 'c') return 0;
  if (size > st->align) size = st->align;
  return (size - (at & (size - 1))) & (size - 1);
}

/* Handles the options that carry no data; anything else is an error. */
static void sb_control(lua_State *L, int opt, const char **fmt,
                       sb_fmtstate *st) {
  switch (opt) {
    case ' ': return;
    case '>': st->order = SB_ORDER_BIG; return;
    case '<': st->order = SB_ORDER_LITTLE; return;
    case '!': {
      int a = sb_readnum(L, fmt, (int)SB_STRUCT_DEFAULT_ALIGN);
      if (a <= 0 || (a & (a - 1)) != 0)
        luaL_error(L, "alignment %d is not a power of 2", a);
      st->align = (size_t)a;
      return;
    }
    default: {
      const char *msg = lua_pushfstring(L, "invalid format option '%c'", opt);
      luaL_argerror(L, 1, msg);
      return;
    }
  }
}

static void sb_fix_order(unsigned char *p, size_t n, int order) {
  if (order != sb_host_order()) {
    size_t i = 0, j = n;
    while (i + 1 < j) {
      unsigned char t = p[i];
      p[i] = p[--j];
      p[j] = t;
      i++;
    }
  }
}

/* ---- pack ---- */

static void sb_put_int(lua_State *L, luaL_Buffer *b, int arg, int order,
                       size_t size) {
  lua_Number n = luaL_checknumber(L, arg);
  uint64_t v = (n < 0) ? sb_d2i64bits((double)n) : sb_d2u64((double)n);
  unsigned char out[SB_STRUCT_MAXINTSIZE];
  size_t i;
  for (i = 0; i < size; i++) {
    size_t at = (order == SB_ORDER_LITTLE) ? i : size - 1 - i;
    out[at] = (unsigned char)(v & 0xffu);
    v >>= 8;
  }
  luaL_addlstring(b, (const char *)out, size);
}

static int sb_struct_pack(lua_State *L) {
  sb_fmtstate st;
  const char *fmt = luaL_checkstring(L, 1);
  int arg = 2;
  size_t total = 0;
  luaL_Buffer b;
  sb_fmt_init(&st);
  /* Sentinel between the arguments and the buffer's stack slots: a missing
   * value argument is reported as "got nil", exactly as in Redis. */
  lua_pushnil(L);
  luaL_buffinit(L, &b);
  while (*fmt != '\0') {
    int opt = (unsigned char)*fmt++;
    size_t size = sb_itemsize(L, opt, &fmt);
    size_t pad = sb_padding(total, &st, opt, size);
    total += pad;
    while (pad-- > 0) luaL_addchar(&b, '\0');
    switch (opt) {
      case 'b': case 'B': case 'h': case 'H': case 'l': case 'L':
      case 'T': case 'i': case 'I':
        sb_put_int(L, &b, arg++, st.order, size);
        break;
      case 'x':
        luaL_addchar(&b, '\0');
        break;
      case 'f': {
        float f = (float)luaL_checknumber(L, arg++);
        sb_fix_order((unsigned char *)&f, sizeof f, st.order);
        luaL_addlstring(&b, (const char *)&f, sizeof f);
        break;
      }
      case 'd': {
        double d = (double)luaL_checknumber(L, arg++);
        sb_fix_order((unsigned char *)&d, sizeof d, st.order);
        luaL_addlstring(&b, (const char *)&d, sizeof d);
        break;
      }
      case 'c': case 's': {
        size_t len;
        const char *s = luaL_checklstring(L, arg, &len);
        arg++;
        if (size == 0) size = len;
        /* Redis reports the argument after the string here. */
        luaL_argcheck(L, len >= size, arg, "string too short");
        luaL_addlstring(&b, s, size);
        if (opt == 's') {
          luaL_addchar(&b, '\0');
          size++;
        }
        break;
      }
      default:
        sb_control(L, opt, &fmt, &st);
        break;
    }
    total += size;
  }
  luaL_pushresult(&b);
  return 1;
}

/* ---- unpack ---- */

static lua_Number sb_get_int(const unsigned char *p, int order, int is_signed,
                             size_t size) {
  uint64_t v = 0;
  size_t i;
  /* Only the last 8 bytes shifted in survive for sizes above 8. */
  for (i = 0; i < size; i++) {
    size_t at = (order == SB_ORDER_BIG) ? i : size - 1 - i;
    v = (v << 8) | (uint64_t)p[at];
  }
  if (!is_signed) return (lua_Number)v;
  {
    unsigned shift = (unsigned)((size * 8u - 1u) & 63u);
    uint64_t mask = ~UINT64_C(0) << shift;
    if (v & mask) v |= mask;
    return (lua_Number)(int64_t)v;
  }
}

static int sb_struct_unpack(lua_State *L) {
  sb_fmtstate st;
  const char *fmt = luaL_checkstring(L, 1);
  size_t len;
  const unsigned char *data =
      (const unsigned char *)luaL_checklstring(L, 2, &len);
  size_t pos = (size_t)luaL_optinteger(L, 3, 1);
  int n = 0;
  luaL_argcheck(L, pos > 0, 3, "offset must be 1 or greater");
  pos--;
  sb_fmt_init(&st);
  while (*fmt != '\0') {
    int opt = (unsigned char)*fmt++;
    size_t size = sb_itemsize(L, opt, &fmt);
    pos += sb_padding(pos, &st, opt, size);
    luaL_argcheck(L, size <= len && pos <= len - size, 2,
                  "data string too short");
    luaL_checkstack(L, 2, "too many results");
    switch (opt) {
      case 'b': case 'B': case 'h': case 'H': case 'l': case 'L':
      case 'T': case 'i': case 'I':
        lua_pushnumber(L, sb_get_int(data + pos, st.order,
                                     islower(opt) != 0, size));
        n++;
        break;
      case 'x':
        break;
      case 'f': {
        float f;
        memcpy(&f, data + pos, sizeof f);
        sb_fix_order((unsigned char *)&f, sizeof f, st.order);
        lua_pushnumber(L, (lua_Number)f);
        n++;
        break;
      }
      case 'd': {
        double d;
        memcpy(&d, data + pos, sizeof d);
        sb_fix_order((unsigned char *)&d, sizeof d, st.order);
        lua_pushnumber(L, (lua_Number)d);
        n++;
        break;
      }
      case 'c': {
        if (size == 0) {
          if (n == 0 || !lua_isnumber(L, -1))
            luaL_error(L, "format 'c0' needs a previous size");
          size = (size_t)sb_d2u64((double)lua_tonumber(L, -1));
          lua_pop(L, 1);
          n--;
          luaL_argcheck(L, size <= len - pos, 2, "data string too short");
        }
        lua_pushlstring(L, (const char *)data + pos, size);
        n++;
        break;
      }
      case 's': {
        const unsigned char *end = memchr(data + pos, '\0', len - pos);
        if (end == NULL) luaL_error(L, "unfinished string in data");
        size = (size_t)(end - (data + pos)) + 1;
        lua_pushlstring(L, (const char *)data + pos, size - 1);
        n++;
        break;
      }
      default:
        sb_control(L, opt, &fmt, &st);
        break;
    }
    pos += size;
  }
  lua_pushinteger(L, (lua_Integer)(pos + 1));
  return n + 1;
}

/* ---- size ---- */

static int sb_struct_size(lua_State *L) {
  sb_fmtstate st;
  const char *fmt = luaL_checkstring(L, 1);
  size_t pos = 0;
  sb_fmt_init(&st);
  while (*fmt != '\0') {
    int opt = (unsigned char)*fmt++;
    size_t size = sb_itemsize(L, opt, &fmt);
    pos += sb_padding(pos, &st, opt, size);
    if (opt == 's')
      luaL_argerror(L, 1, "option 's' has no fixed size");
    else if (opt == 'c' && size == 0)
      luaL_argerror(L, 1, "option 'c0' has no fixed size");
    if (!isalnum(opt)) sb_control(L, opt, &fmt, &st);
    pos += size;
  }
  lua_pushinteger(L, (lua_Integer)pos);
  return 1;
}

static const luaL_Reg sb_struct_funcs[] = {
  {"pack", sb_struct_pack},
  {"unpack", sb_struct_unpack},
  {"size", sb_struct_size},
  {NULL, NULL}
};

int sb_luaopen_struct(lua_State *L) {
  luaL_register(L, "struct", sb_struct_funcs);
  return 1;
}
