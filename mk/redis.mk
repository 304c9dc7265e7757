# mk/redis.mk: included by the Makefile (empty until filled).
