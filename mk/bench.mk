# mk/bench.mk: included by the Makefile (empty until filled).
