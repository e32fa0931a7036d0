def preload(parser):
    parser.add_argument("--demo-ext-flag", type=str, default="unset", help="flag added by the demo extension")
