"""What the tests share: running and stopping daemons, waiting, reading metrics, writing
streams.yaml, servers of real parts, and stand-ins at the library boundaries. Tests
import helpers from here only, never from another test module or a conftest."""
