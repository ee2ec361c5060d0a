"""Scale-out on real redis-server and nginx: the Redis backplane, Sentinel, history, guests, rate
limit, two instances behind nginx."""
