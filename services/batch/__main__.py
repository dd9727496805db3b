from libs.server import main
from services.batch.service import SPEC

main(SPEC)
