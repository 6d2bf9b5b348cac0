#!/usr/bin/env bash
# Differential test of Sources/CLuaLibs (struct + cmsgpack) against a real
# redis-server 7.0: every case in cases.txt is evaluated by
#   - the harness built with gcc (plain),
#   - the harness built with -fsanitize=address,undefined,
#   - redis-cli EVAL on a private redis-server (random loopback port),
# and the outputs must be identical. Prints "N passed, M failed"; exits 0 only
# when nothing failed.
#
#   usage: bash Tests/LuaLibs/check.sh [-v]      (-v: show every case)
set -u

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
LIB="$ROOT/Sources/CLuaLibs"
CASES="${CASES_FILE:-$HERE/cases.txt}"
VERBOSE=0
[ "${1:-}" = "-v" ] && VERBOSE=1

for tool in gcc redis-server redis-cli; do
  command -v "$tool" >/dev/null 2>&1 || { echo "check.sh: $tool not found" >&2; exit 2; }
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/clualibs-check.XXXXXX")"
REDIS_PID=""
cleanup() {
  if [ -n "$REDIS_PID" ]; then
    kill "$REDIS_PID" 2>/dev/null
    wait "$REDIS_PID" 2>/dev/null
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- build
CFLAGS=(-std=c11 -Wall -Wextra -Werror -I"$LIB/include")
SRCS=("$HERE/harness.c" "$LIB/struct.c" "$LIB/cmsgpack.c")
gcc "${CFLAGS[@]}" -O2 -o "$WORK/harness" "${SRCS[@]}" -llua5.1 -lm || { echo "build failed" >&2; exit 2; }
gcc "${CFLAGS[@]}" -O1 -g -fno-omit-frame-pointer \
    -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all \
    -o "$WORK/harness-asan" "${SRCS[@]}" -llua5.1 -lm || { echo "asan build failed" >&2; exit 2; }
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=99"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=98"

# ---------------------------------------------------------------- redis
PORT=""
for _ in $(seq 1 30); do
  p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
  redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no \
      --daemonize no --logfile "$WORK/redis.log" >/dev/null 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 1 50); do
    if redis-cli -h 127.0.0.1 -p "$p" ping 2>/dev/null | grep -q PONG; then PORT="$p"; break; fi
    kill -0 "$REDIS_PID" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$PORT" ] && break
  kill "$REDIS_PID" 2>/dev/null; wait "$REDIS_PID" 2>/dev/null; REDIS_PID=""
done
[ -n "$PORT" ] || { echo "could not start redis-server" >&2; exit 2; }

# ---------------------------------------------------------------- scripts
# Protected mode: the case is the argument list of all(); every value is
# serialized with type tags (strings hex-encoded, numbers %.17g, tables with
# sorted keys) and errors are caught with pcall, so both sides return one
# plain string. Keep the prelude's line count stable: error texts carry the
# line number of the case (user_script:21:).
cat > "$WORK/prelude.lua" <<'EOF'
local function hx(s) return (string.gsub(s, '.', function(c) return string.format('%02x', string.byte(c)) end)) end
local ser
ser = function(v)
  local t = type(v)
  if t == 'string' then return 's"'..hx(v)..'"'
  elseif t == 'number' then return 'n'..string.format('%.17g', v)
  elseif t == 'table' then
    local ks = {}
    for k, x in pairs(v) do ks[#ks+1] = ser(k)..'='..ser(x) end
    table.sort(ks)
    return '{'..table.concat(ks, ',')..'}'
  else return t..':'..tostring(v) end
end
local function all(...)
  local n = select('#', ...)
  local out = {}
  for i = 1, n do out[i] = ser((select(i, ...))) end
  return n..'|'..table.concat(out, ' ')
end
local ok, r = pcall(function() return all(
EOF
printf '\n) end)\nif ok then return r else return "E:"..tostring(r) end\n' > "$WORK/postlude.lua"

# Redis error replies look like
#   ERR user_script:1: <message> script: <sha1>, on @user_script:1.
# the harness prints "ERR user_script:1: <message>"; compare that part.
# redis-cli also adds a blank line after error replies, so trailing newlines
# are squeezed on every side (all compared outputs are printable text).
normalize_redis() {
  sed -e 's/ script: [0-9a-f]\{40\}, on @user_script:[0-9]*\.$//' | squeeze
}
squeeze() {
  local s
  s="$(cat)"
  printf '%s\n' "$s"
}

pass=0; fail=0; n=0
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in ''|'#'*) continue ;; esac
  n=$((n + 1))
  script="$WORK/case.lua"
  if [ "${line#raw }" != "$line" ]; then
    printf 'return %s\n' "${line#raw }" > "$script"
  else
    { cat "$WORK/prelude.lua"; printf '%s' "$line"; cat "$WORK/postlude.lua"; } > "$script"
  fi
  redis-cli -h 127.0.0.1 -p "$PORT" --raw EVAL "$(cat "$script")" 0 2>&1 \
      | normalize_redis > "$WORK/redis.out"
  "$WORK/harness" "$script" 2> "$WORK/mine.err" | squeeze > "$WORK/mine.out"
  "$WORK/harness-asan" "$script" 2> "$WORK/asan.err" > "$WORK/asan.raw"
  arc=$?
  squeeze < "$WORK/asan.raw" > "$WORK/asan.out"
  ok=1; why=""
  if ! cmp -s "$WORK/redis.out" "$WORK/mine.out"; then ok=0; why="output differs from redis"; fi
  if [ "$arc" -ge 90 ] || grep -q 'ERROR: AddressSanitizer\|runtime error:' "$WORK/asan.err"; then
    ok=0; why="$why sanitizer failure (rc=$arc)"
  elif ! cmp -s "$WORK/mine.out" "$WORK/asan.out"; then
    ok=0; why="$why asan build output differs"
  fi
  if [ "$ok" = 1 ]; then
    pass=$((pass + 1))
    [ "$VERBOSE" = 1 ] && printf 'ok   %3d  %s\n' "$n" "$line"
  else
    fail=$((fail + 1))
    printf 'FAIL %3d  %s\n      (%s)\n' "$n" "$line" "${why# }"
    printf '      redis: %s\n' "$(head -c 600 "$WORK/redis.out")"
    printf '      mine : %s\n' "$(head -c 600 "$WORK/mine.out")"
    [ -s "$WORK/asan.err" ] && sed 's/^/      asan : /' "$WORK/asan.err" | head -20
  fi
done < "$CASES"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
