from hybrid.cli import run

run()
