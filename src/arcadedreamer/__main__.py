from arcadedreamer.cli import run

run()
