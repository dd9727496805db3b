from libs.server import main
from services.tracking.service import SPEC

main(SPEC)
