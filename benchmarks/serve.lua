-- wrk script of benchmarks/serve.py: POST one note per request, cycling through a file of JSON bodies.
--   wrk ... -s benchmarks/serve.lua URL -- BODIES.jsonl API_KEY
local bodies = {}
local next_body = 0
local threads = 0

function setup(thread)
   threads = threads + 1
   thread:set("offset", threads * 997)
end

function init(args)
   for line in io.lines(args[1]) do
      bodies[#bodies + 1] = line
   end
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["Authorization"] = "Bearer " .. args[2]
   -- each thread starts at its own place in the file
   next_body = offset % #bodies
end

function request()
   next_body = next_body % #bodies + 1
   return wrk.format(nil, nil, nil, bodies[next_body])
end
