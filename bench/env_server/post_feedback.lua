-- wrk script: POSTs one feedback request (body from $BODY) and counts answers whose verdict is
-- not $EXPECT_VERDICT, so the table shows the server really graded every request.
local body = os.getenv("BODY")
local expect = '"verdict":"' .. (os.getenv("EXPECT_VERDICT") or "accepted") .. '"'
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  wrong = 0
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

function response(status, headers, resp_body)
  if status ~= 200 or not string.find(resp_body, expect, 1, true) then
    wrong = wrong + 1
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("wrong") end
  io.write(string.format("WRONG_VERDICTS %d\n", total))
end
