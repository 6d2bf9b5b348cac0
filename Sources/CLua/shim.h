#ifndef STRONGBOX_CLUA_SHIM_H
#define STRONGBOX_CLUA_SHIM_H
#include <lua5.1/lua.h>
#include <lua5.1/lauxlib.h>
#include <lua5.1/lualib.h>

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
#endif
