from libs.migrations import run_env

run_env("scheduler")
