"""The kernel livepatch selftests' helpers (tools/testing/selftests/livepatch/
functions.sh), typed, and what the tools they run say (kmod, procps,
coreutils, diff): one implementation for the scenario language's built-in
helpers, the pytest plugin and the test suite.

    st = Selftest(machine, module_dirs_finder([Path("fixtures/build/modules")]))
    st.start_test("basic function patching")
    st.load_lp("test_klp_livepatch")
    st.disable_lp("test_klp_livepatch")
    st.unload_lp("test_klp_livepatch")
    st.check_result("% insmod test_modules/test_klp_livepatch.ko\\n…")   # Die on a mismatch
"""
from __future__ import annotations

from klpemu.selftest.helpers import (FIXTURE_MODULES, MAX_RETRIES, RETRY_INTERVAL, SYSFS_KLP_DIR, Die, LoadStyle, Selftest,
                                     SelftestExit, Skip, check_result_keeps, filter_check_result, module_dirs_finder)
from klpemu.selftest.procps import Syslog

__all__ = ["FIXTURE_MODULES", "MAX_RETRIES", "RETRY_INTERVAL", "SYSFS_KLP_DIR", "Die", "LoadStyle", "Selftest", "SelftestExit",
           "Skip", "Syslog", "check_result_keeps", "filter_check_result", "module_dirs_finder"]
