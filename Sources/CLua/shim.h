#ifndef STRONGBOX_CLUA_SHIM_H
#define STRONGBOX_CLUA_SHIM_H
#include <lua5.1/lua.h>
#include <lua5.1/lauxlib.h>
#include <lua5.1/lualib.h>
#include <time.h>

/* The cjson and bit libraries Redis ships with its Lua (Debian's lua-cjson-dev, lua-bitop-dev). */
extern int luaopen_cjson(lua_State *L);
extern int luaopen_bit(lua_State *L);

/* Lua's function-like macros do not import into Swift: thin inline wrappers. */
static inline void sb_lua_pop(lua_State *L, int n) { lua_pop(L, n); }
static inline void sb_lua_newtable(lua_State *L) { lua_newtable(L); }
static inline int sb_lua_isnil(lua_State *L, int i) { return lua_isnil(L, i); }
static inline int sb_lua_istable(lua_State *L, int i) { return lua_istable(L, i); }
static inline void sb_lua_pushcfunction(lua_State *L, lua_CFunction f) { lua_pushcfunction(L, f); }
static inline void sb_lua_setglobal(lua_State *L, const char *name) { lua_setglobal(L, name); }
static inline int sb_lua_registryindex(void) { return LUA_REGISTRYINDEX; }

/* The kill flag lives in memory Swift owns; the hook and SCRIPT KILL reach it atomically. */
static inline void sb_flag_store(int *flag, int value) { __atomic_store_n(flag, value, __ATOMIC_RELAXED); }
static inline int sb_flag_load(int *flag) { return __atomic_load_n(flag, __ATOMIC_RELAXED); }

/* The count hook runs in C, so raising the Lua error (a longjmp) never crosses a Swift frame.
 * The flag's address is stored in the registry under "sb_kill". */
static void sb_kill_hook(lua_State *L, lua_Debug *ar);

/* The kill flag and the load deadline, checked from the count hook and (as `__sb_interrupt`)
 * before every library function the bootstrap wraps: a loop of few instructions that each start
 * a long C call (string.rep, pattern matching) is stopped too. */
static int sb_interrupt(lua_State *L) {
    sb_kill_hook(L, NULL);
    return 0;
}

static inline void sb_register_interrupt(lua_State *L) {
    lua_pushcfunction(L, sb_interrupt);
    lua_setglobal(L, "__sb_interrupt");
}

static void sb_kill_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_getfield(L, LUA_REGISTRYINDEX, "sb_kill");
    int *flag = (int *)lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (flag && sb_flag_load(flag)) {
        /* Keep firing on every instruction so a script that catches the error cannot go on. */
        lua_sethook(L, sb_kill_hook, LUA_MASKLINE | LUA_MASKCOUNT, 1);
        lua_pushstring(L, "Script killed by user with SCRIPT KILL...");
        lua_error(L);
    }
    /* FUNCTION LOAD's time limit: a deadline (monotonic ms) in the registry while a library loads. */
    lua_getfield(L, LUA_REGISTRYINDEX, "sb_deadline");
    lua_Number deadline = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (deadline > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if ((lua_Number)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 >= deadline) {
            lua_sethook(L, sb_kill_hook, LUA_MASKLINE | LUA_MASKCOUNT, 1);
            lua_pushstring(L, "FUNCTION LOAD timeout");
            lua_error(L);
        }
    }
}

/* Sets (ms > 0) or clears (0) the load deadline, `ms` milliseconds from now. */
static inline void sb_set_deadline(lua_State *L, long ms) {
    lua_Number deadline = 0;
    if (ms > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        deadline = (lua_Number)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + ms;
    }
    lua_pushnumber(L, deadline);
    lua_setfield(L, LUA_REGISTRYINDEX, "sb_deadline");
}

static inline void sb_install_kill_hook(lua_State *L, int *flag) {
    lua_pushlightuserdata(L, flag);
    lua_setfield(L, LUA_REGISTRYINDEX, "sb_kill");
    lua_sethook(L, sb_kill_hook, LUA_MASKCOUNT, 100000);
}

static inline void sb_reset_kill_hook(lua_State *L) {
    lua_sethook(L, sb_kill_hook, LUA_MASKCOUNT, 100000);
}
/* redis.call: runs the command through the Swift implementation registered under
 * "sb_call_impl", then raises its error reply from here, a C frame, so the raise never unwinds
 * through Swift. Being a C function also keeps the calling script's frame on the stack (Lua 5.1
 * does not tail-call C functions), so errors can name the script line that made the call. */
static int sb_redis_call_raising(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, "sb_call_impl");
    lua_CFunction impl = (lua_CFunction)lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (impl == NULL) return 0;
    int results = impl(L);
    if (results == 1 && lua_istable(L, -1)) {
        lua_getfield(L, -1, "err");
        int is_error = lua_type(L, -1) == LUA_TSTRING;
        lua_pop(L, 1);
        if (is_error) return lua_error(L);
    }
    return results;
}

static inline void sb_register_call(lua_State *L, lua_CFunction impl) {
    lua_pushlightuserdata(L, (void *)impl);
    lua_setfield(L, LUA_REGISTRYINDEX, "sb_call_impl");
    lua_pushcfunction(L, sb_redis_call_raising);
    lua_setglobal(L, "__sb_rcall");
}
/* Text-only loading (the CVE-2015-4335 class): Lua 5.1 treats a chunk starting with ESC as
 * precompiled bytecode, which the system liblua would run unchecked. Every chunk is fed to the
 * parser behind one leading space, so the first byte is never ESC and the parser reports an ESC
 * as Redis's patched Lua does ("unexpected symbol near 'char(27)'"); line numbers are unchanged. */
typedef struct { const char *body; size_t length; int stage; } sb_text_reader_state;
static const char *sb_text_reader(lua_State *L, void *ud, size_t *size) {
    (void)L;
    sb_text_reader_state *s = (sb_text_reader_state *)ud;
    if (s->stage == 0) { s->stage = 1; *size = 1; return " "; }
    if (s->stage == 1) { s->stage = 2; *size = s->length; return s->length ? s->body : NULL; }
    *size = 0;
    return NULL;
}
static inline int sb_load_text(lua_State *L, const char *body, size_t length, const char *name) {
    sb_text_reader_state s = { body, length, 0 };
    return lua_load(L, sb_text_reader, &s, name);
}
/* loadstring(s [, chunkname]) for scripts: text only. */
static int sb_loadstring(lua_State *L) {
    size_t length;
    const char *body = luaL_checklstring(L, 1, &length);
    const char *name = luaL_optstring(L, 2, body);
    if (sb_load_text(L, body, length, name) == 0) return 1;
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
}
static inline void sb_register_loadstring(lua_State *L) {
    lua_pushcfunction(L, sb_loadstring);
    lua_setglobal(L, "__sb_loadstring");
}
/* Empties every read-only proxy listed in the registry array "sb_proxies": whatever a script
 * managed to store in one with raw access (rawset, table.insert) never reaches the next script. */
static inline void sb_wipe_proxies(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, "sb_proxies");
    if (!lua_istable(L, -1)) { lua_pop(L, 1); return; }
    int n = (int)lua_objlen(L, -1);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        if (lua_istable(L, -1)) {
            lua_pushnil(L);
            while (lua_next(L, -2) != 0) {
                lua_pop(L, 1);                 /* the value */
                lua_pushvalue(L, -1);          /* the key, again */
                lua_pushnil(L);
                lua_rawset(L, -4);             /* proxy[key] = nil (allowed while traversing) */
            }
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}
/* lua_rawget with a string key (raw: no metamethod runs). */
static inline void sb_rawgetfield(lua_State *L, int index, const char *k) {
    if (index < 0 && index > LUA_REGISTRYINDEX) index = lua_gettop(L) + index + 1;
    lua_pushstring(L, k);
    lua_rawget(L, index);
}
/* Wraps a Lua function in a C closure. Lua 5.1 turns `return f()` into a tail call that drops
 * the calling script's frame; a C function is never tail-called, so errors raised by a library
 * function written in Lua can still name the script line that called it (as Redis's C ones do). */
static int sb_trampoline(lua_State *L) {
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}
static int sb_cwrap(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    lua_pushcclosure(L, sb_trampoline, 1);
    return 1;
}
static inline void sb_register_cwrap(lua_State *L) {
    lua_pushcfunction(L, sb_cwrap);
    lua_setglobal(L, "__sb_cwrap");
}
#endif
