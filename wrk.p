Running 12s test @ http://127.0.0.1:18191/v1/predict
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   198.33ms   80.12ms 615.06ms   72.01%
    Req/Sec    41.29     17.38    80.00     70.80%
  483 requests in 12.11s, 833.33KB read
Requests/sec:     39.89
Transfer/sec:     68.82KB
