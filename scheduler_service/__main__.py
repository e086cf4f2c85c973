import sys

from scheduler_service.service import main

sys.exit(main())
