import sys

from t2ikit.cli import main

sys.exit(main())
