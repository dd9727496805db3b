from libs.server import main
from services.scheduler.service import SPEC

main(SPEC)
