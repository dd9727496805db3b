from libs.bootstrap import main
from services.batch.wiring import SPEC

main(SPEC)
