from libs.bootstrap import main
from services.scheduler.wiring import SPEC

main(SPEC)
