.PHONY: demo test test-fast test-slow bench bench-backtest mlflow-ui

demo:
	./dev demo

test:
	./dev test

test-fast:
	./dev test -m "not slow"

test-slow:
	./dev test -m slow

bench:
	./dev bench

bench-backtest:
	./dev setup && .venv/bin/python benchmarks/bench_backtest.py

mlflow-ui:
	./dev setup && PATH="$(CURDIR)/.venv/bin:$$PATH" bash mlflow/server.sh
