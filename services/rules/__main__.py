from libs.server import main
from services.rules.service import SPEC

main(SPEC)
