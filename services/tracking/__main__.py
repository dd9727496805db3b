from libs.bootstrap import main
from services.tracking.wiring import SPEC

main(SPEC)
