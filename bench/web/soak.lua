-- wrk script for bench/soak.sh: sends one kind of request over and over
-- and counts the answers by status (and, for a redirect, by where it
-- points), so that the soak tells a 303 to the maintenance page from the
-- app's own 303 and a 503 from a 500.
--
--   SOAK_WRK_OUT=FILE wrk … -s bench/web/soak.lua URL -- METHOD PATH COOKIE
--
-- COOKIE is a session id sent as `sessionid=…`, or `-` for none. A POST
-- sends the form `text=soak`. At the end the counts are written to FILE,
-- one `STATUS[ LOCATION] COUNT` line each, then wrk's own socket errors
-- as `error:connect N` (and read, write, timeout).

local req
local out

function init(args)
    local method, path, cookie = args[1], args[2], args[3]
    local headers = {}
    local body = nil
    if cookie ~= nil and cookie ~= "-" then
        headers["Cookie"] = "sessionid=" .. cookie
    end
    if method == "POST" then
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        body = "text=soak"
    end
    req = wrk.format(method, path, headers, body)
end

function request()
    return req
end

counts = {}

function response(status, headers, body)
    local key = tostring(status)
    if status >= 300 and status < 400 then
        key = key .. " " .. (headers["location"] or headers["Location"] or "?")
    end
    counts[key] = (counts[key] or 0) + 1
end

local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function done(summary, latency, requests)
    local total = {}
    for _, thread in ipairs(threads) do
        local c = thread:get("counts")
        for k, v in pairs(c) do
            total[k] = (total[k] or 0) + v
        end
    end
    -- init's arguments reach the threads' states, not this one.
    local path = os.getenv("SOAK_WRK_OUT")
    local f = assert(io.open(path, "w"))
    for k, v in pairs(total) do
        f:write(k, " ", v, "\n")
    end
    for _, e in ipairs({ "connect", "read", "write", "timeout" }) do
        f:write("error:", e, " ", summary.errors[e], "\n")
    end
    f:close()
end
