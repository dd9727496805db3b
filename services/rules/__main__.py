from libs.bootstrap import main
from services.rules.wiring import SPEC

main(SPEC)
