-- Redis 7.0's script sandbox, built once over a fresh Lua 5.1 state by
-- src/script/lua.rs (chunk name "=[shoal]": the error handler skips frames
-- of this chunk, so errors point at the user's line as Redis's do).
--
-- Redis patches Lua so library tables and the global table are read-only;
-- stock Lua cannot, so each is a proxy: an empty table whose metatable
-- reads through to the real one and refuses writes with Redis's text.
-- pairs, next, rawget, rawset and setmetatable see through proxies.
local raw, mode = ...

local G = _G
local getinfo = debug.getinfo
local error, type, tostring, tonumber, select = error, type, tostring, tonumber, select
local rawget, rawset, rawnext = rawget, rawset, next
local setmetatable, getmetatable = setmetatable, getmetatable
local rawpcall, rawxpcall, rawloadstring = pcall, xpcall, loadstring
local floor, ceil = math.floor, math.ceil
local concat = table.concat
local sbyte, ssub, sfind, slower, sgsub, smatch = string.byte, string.sub, string.find, string.lower, string.gsub, string.match
local killed, slot, raiser = raw.killed, raw.slot, raw.raiser

local real = setmetatable({}, { __mode = 'k' }) -- proxy -> real table

local function ro()
  error('Attempt to modify a readonly table', 2)
end
local function missing(_, n)
  error("Script attempted to access nonexistent global variable '" .. tostring(n) .. "'", 2)
end
local function proxy(t)
  local p = {}
  setmetatable(p, { __index = t, __newindex = ro, __metatable = false })
  real[p] = t
  return p
end
local function copy(t)
  local c = {}
  for k, v in rawnext, t do c[k] = v end
  return c
end
-- C's (int) cast of lua_tonumber.
local function int(v)
  v = tonumber(v) or 0
  if v >= 0 then return floor(v) end
  return ceil(v)
end
-- luaPushErrorBuff: "-CODE msg" keeps CODE, anything else gets ERR.
local function error_text(e)
  local code, msg = 'ERR', e
  if ssub(e, 1, 1) == '-' then
    local sp = sfind(e, ' ', 1, true)
    if sp then code, msg = ssub(e, 2, sp - 1), ssub(e, sp + 1) else msg = ssub(e, 2) end
  end
  msg = sgsub(sgsub(msg, '^[\r\n]+', ''), '[\r\n]+$', '')
  return code .. ' ' .. msg
end
-- Redis raises its API errors from C functions, so an error points at
-- the script's line even after a tail call (`return redis.call(...)`).
-- `raiser(inner)` makes such a C function: inner answers (value, err)
-- and a non-nil err is raised (a string with the caller's position, as
-- luaL_error does; a table as it is).
local function err_table(msg)
  return { err = 'ERR ' .. msg }
end

local api = {}
for _, k in rawnext, {
  'assert', 'collectgarbage', 'error', 'gcinfo', 'getmetatable', 'ipairs', 'load',
  'tonumber', 'tostring', 'type', 'unpack', 'rawequal', 'select', '_VERSION',
} do
  api[k] = G[k]
end

-- A killed script cannot catch its own death.
local function rethrow_if_killed(ok, ...)
  if not ok and killed() then error((...), 0) end
  return ok, ...
end
local function redis_pcall_result(ok, ...)
  if ok then return true, ... end
  local e = ...
  if killed() then error(e, 0) end
  if type(e) == 'table' then
    local s = e.err
    if type(s) == 'string' or type(s) == 'number' then e = s end
  end
  return false, e
end
api.pcall = function(...) return redis_pcall_result(rawpcall(...)) end
api.xpcall = function(f, h) return rethrow_if_killed(rawxpcall(f, h)) end
api.next = function(t, k) return rawnext(real[t] or t, k) end
api.pairs = function(t) return rawnext, real[t] or t, nil end
api.rawget = function(t, k) return rawget(real[t] or t, k) end
api.rawset = function(t, k, v)
  if real[t] then error('Attempt to modify a readonly table', 0) end
  return rawset(t, k, v)
end
api.setmetatable = function(t, m)
  if real[t] then error('Attempt to modify a readonly table', 0) end
  return setmetatable(t, m)
end
-- Redis's Lua parses every chunk as text: bytecode is a syntax error.
api.loadstring = function(s, name)
  if type(s) == 'string' and sbyte(s, 1) == 27 and name == nil then
    local first = smatch(s, '^[^%z\n\r]*')
    local cut = #first > 43 or (#first < #s and sbyte(s, #first + 1) ~= 0)
    if #first > 43 then first = ssub(first, 1, 43) end
    return nil, '[string "' .. first .. (cut and '..."' or '"') .. "]:1: unexpected symbol near 'char(27)'"
  end
  return rawloadstring(s, name)
end

local co = copy(coroutine)
local rawresume = coroutine.resume
co.resume = function(...) return rethrow_if_killed(rawresume(...)) end

local m = copy(math)
m.random = nil
m.randomseed = nil

-- redis.*
local resp = 2
local R = {}
R.call = raiser(function(...)
  local r, failed = slot.host(resp == 3, ...)
  if failed then return nil, r end
  return r
end)
R.pcall = function(...)
  local r = slot.host(resp == 3, ...)
  return r
end
R.log = raiser(function(...)
  local argc = select('#', ...)
  if argc < 2 then return nil, err_table('redis.log() requires two arguments or more.') end
  local level = ...
  if tonumber(level) == nil then return nil, err_table('First argument must be a number (log level).') end
  level = int(level)
  if level < 0 or level > 3 then return nil, err_table('Invalid debug level.') end
  local parts = {}
  for j = 2, argc do
    local v = select(j, ...)
    local t = type(v)
    if t == 'string' or t == 'number' then parts[#parts + 1] = tostring(v) end
  end
  slot.log(level, concat(parts, ' '))
end)
R.setresp = raiser(function(...)
  if select('#', ...) ~= 1 then return nil, err_table('redis.setresp() requires one argument.') end
  local v = int((...))
  if v ~= 2 and v ~= 3 then return nil, err_table('RESP version must be 2 or 3.') end
  resp = v
end)
R.set_repl = raiser(function(...)
  if select('#', ...) ~= 1 then return nil, err_table('redis.set_repl() requires two arguments.') end
  local v = int((...))
  if v < 0 or v > 3 then
    return nil, err_table('Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE.')
  end
end)
R.replicate_commands = function() return true end
R.breakpoint = function() return false end
R.debug = function() end
R.sha1hex = raiser(function(...)
  if select('#', ...) ~= 1 then return nil, err_table('wrong number of arguments') end
  local v = ...
  local t = type(v)
  return raw.sha1hex((t == 'string' or t == 'number') and tostring(v) or '')
end)
R.error_reply = function(...)
  if select('#', ...) ~= 1 or type((...)) ~= 'string' then
    return { err = 'ERR wrong number or type of arguments' }
  end
  local e = ...
  if ssub(e, 1, 1) ~= '-' then e = '-' .. e end
  return { err = error_text(e) }
end
R.status_reply = function(...)
  if select('#', ...) ~= 1 or type((...)) ~= 'string' then
    return { err = 'ERR wrong number or type of arguments' }
  end
  return { ok = (...) }
end
local constants = {
  LOG_DEBUG = 0, LOG_VERBOSE = 1, LOG_NOTICE = 2, LOG_WARNING = 3,
  REPL_NONE = 0, REPL_AOF = 1, REPL_SLAVE = 2, REPL_REPLICA = 2, REPL_ALL = 3,
  REDIS_VERSION = raw.version, REDIS_VERSION_NUM = raw.version_num,
}
for k, v in rawnext, constants do R[k] = v end

-- cjson and bit: Rust functions that answer (value, message).
local cjson = {}
for k, v in rawnext, raw.cjson do
  cjson[k] = type(v) == 'function' and raiser(v) or v
end
local bit = {}
for k, v in rawnext, raw.bit do bit[k] = raiser(v) end
m.random = raiser(raw.random)
m.randomseed = raiser(raw.randomseed)

local smt = getmetatable('')
api.string = proxy(string)
api.table = proxy(table)
api.math = proxy(m)
api.coroutine = proxy(co)
api.redis = proxy(R)
api.cjson = proxy(cjson)
api.bit = proxy(bit)
smt.__index = api.string
smt.__metatable = proxy(smt)

-- Empty the real global table: every name resolves through `api`.
local names = {}
for k in rawnext, G do names[#names + 1] = k end
for _, k in rawnext, names do rawset(G, k, nil) end
api._G = G
local gmt = { __index = api, __newindex = ro }
gmt.__metatable = proxy(gmt)
setmetatable(api, { __index = missing })
setmetatable(G, gmt)
real[G] = api

-- Redis's error handler: errors become {err=, source=, line=} with the
-- position of the user's frame (C frames, this chunk's frames and the
-- tail-call markers they leave are skipped).
local function handler(err)
  local level = 2
  local i = getinfo(level, 'nSl')
  while i and (i.what == 'C' or i.what == 'tail' or i.source == '=[shoal]') do
    level = level + 1
    i = getinfo(level, 'nSl')
  end
  if type(err) ~= 'table' then err = { err = 'ERR ' .. tostring(err) } end
  if i then
    err.source = i.source
    err.line = i.currentline
  end
  return err
end

local exports = {}
-- Run a compiled script (EVAL, with KEYS and ARGV) or a function (FCALL,
-- called with its keys and args tables): the first nkeys of the varargs
-- are keys, the rest args; nkeys < 0 passes the two tables instead. Answers ok, result or error table, resp == 3.
exports.run = function(f, nkeys, ...)
  resp = 2
  local keys, args
  if nkeys < 0 then
    -- Many arguments come as two tables (a call's arguments must fit the
    -- Lua stack).
    keys, args = ...
  else
    local all = { ... }
    keys, args = {}, {}
    for i = 1, nkeys do keys[i] = all[i] end
    for i = nkeys + 1, #all do args[i - nkeys] = all[i] end
  end
  local ok, r
  if mode == 'eval' then
    rawset(api, 'KEYS', keys)
    rawset(api, 'ARGV', args)
    ok, r = rawxpcall(f, handler)
    -- Do not keep them (they may be large) until the next run.
    rawset(api, 'KEYS', nil)
    rawset(api, 'ARGV', nil)
  else
    ok, r = rawxpcall(function() return f(keys, args) end, handler)
  end
  return ok, r, resp == 3
end

if mode == 'functions' then
  -- FUNCTION LOAD runs the library body with only redis.register_function,
  -- redis.log and the constants in sight.
  local pending
  local flagset = {}
  for _, f in rawnext, raw.flags do flagset[f] = true end
  local function isstr(v)
    local t = type(v)
    return t == 'string' or t == 'number'
  end
  local function fail(msg)
    error(err_table(msg), 0)
  end
  local function register_checked(...)
    if not pending then fail('redis.register_function can only be called on FUNCTION LOAD command') end
    local argc = select('#', ...)
    if argc < 1 or argc > 2 then fail('wrong number of arguments to redis.register_function') end
    local name, cb, desc, flags
    if argc == 1 then
      local t = ...
      if type(t) ~= 'table' then
        fail('calling redis.register_function with a single argument is only applicable to Lua table (representing named arguments).')
      end
      for k, v in rawnext, t do
        if not isstr(k) then fail('named argument key given to redis.register_function is not a string') end
        local key = slower(tostring(k))
        if key == 'function_name' then
          if not isstr(v) then fail('function_name argument given to redis.register_function must be a string') end
          name = tostring(v)
        elseif key == 'description' then
          if not isstr(v) then fail('description argument given to redis.register_function must be a string') end
          desc = tostring(v)
        elseif key == 'callback' then
          if type(v) ~= 'function' then fail('callback argument given to redis.register_function must be a function') end
          cb = v
        elseif key == 'flags' then
          if type(v) ~= 'table' then fail('flags argument to redis.register_function must be a table representing function flags') end
          flags = {}
          local j = 1
          while true do
            local f = v[j]
            if f == nil then break end
            if not isstr(f) or not flagset[slower(tostring(f))] then fail('unknown flag given') end
            flags[#flags + 1] = slower(tostring(f))
            j = j + 1
          end
        else
          fail('unknown argument given to redis.register_function')
        end
      end
      if not name then fail('redis.register_function must get a function name argument') end
      if not cb then fail('redis.register_function must get a callback argument') end
    else
      name, cb = ...
      if not isstr(name) then fail('first argument to redis.register_function must be a string') end
      if type(cb) ~= 'function' then fail('second argument to redis.register_function must be a function') end
      name = tostring(name)
    end
    if not smatch(name, '^[%w_]+$') then fail(raw.name_error) end
    for _, f in rawnext, pending do
      if f.name == name then fail('Function already exists in the library') end
    end
    pending[#pending + 1] = { name = name, callback = cb, description = desc, flags = flags or {} }
  end
  local function register_result(ok, e)
    if ok then return nil, nil end
    return nil, e
  end
  local register = raiser(function(...) return register_result(rawpcall(register_checked, ...)) end)
  local LR = { register_function = register, log = R.log }
  for k, v in rawnext, constants do LR[k] = v end
  setmetatable(LR, { __index = missing })
  local load_api = { redis = proxy(LR) }
  setmetatable(load_api, { __index = missing })
  -- Answers true, functions or false, message (luaExtractErrorInformation).
  exports.load = function(f)
    pending = {}
    gmt.__index = load_api
    local ok, err = rawpcall(f)
    gmt.__index = api
    local p = pending
    pending = nil
    if ok then return true, p end
    local t = type(err)
    if t == 'string' or t == 'number' then return false, 'ERR ' .. err end
    if t == 'table' then
      local msg = err.err
      if type(msg) == 'string' or type(msg) == 'number' then return false, tostring(msg) end
    end
    return false, 'ERR unknown error'
  end
end

return exports
