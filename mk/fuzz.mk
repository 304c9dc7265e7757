# mk/fuzz.mk: included by the Makefile (empty until filled).
