#!/usr/bin/python3
"""scripts/check-layers: passes on this repository, and fails (exit 1,
naming the circle or the include) on small source trees built here with a
circle among format/ modules (by includes, or by calls hidden behind one
shared header), a circle among fs/ modules, format/ including fs/ or FUSE or
curl, or format/ calling into fs/; an fs/ circle allowed on the command
line is a warning. Comments and strings never make an edge.

Run by ctest (unit_layers), or directly: /usr/bin/python3 tests/unit/test_layers.py
"""
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(REPO, "scripts", "check-layers")


def run(root=None, *extra):
    args = [sys.executable, SCRIPT] + (["--root", root] if root else []) + list(extra)
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=120)
    return p.returncode, p.stdout


class Tree:
    """A throwaway source tree: format/ and fs/ with the given files."""

    def __init__(self, files):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = self.tmp.name
        os.mkdir(os.path.join(self.root, "format"))
        os.mkdir(os.path.join(self.root, "fs"))
        for path, text in files.items():
            with open(os.path.join(self.root, path), "w") as f:
                f.write(textwrap.dedent(text))

    def __enter__(self):
        return self.root

    def __exit__(self, *exc):
        self.tmp.cleanup()


# A clean base: format/ a -> b, fs/ p -> q, fs/ uses format/.
BASE = {
    "format/a.h": '#include "b.h"\nint a_f(void);\n',
    "format/a.c": '#include "a.h"\nint a_f(void) { return b_f(); }\n',
    "format/b.h": "int b_f(void);\n",
    "format/b.c": '#include "b.h"\nint b_f(void) { return 1; }\n',
    "fs/fs.h": '#include "a.h"\nint p_f(void);\nint q_f(void);\n',
    "fs/p.c": '#include "fs.h"\nint p_f(void) { return q_f() + a_f(); }\n',
    "fs/q.c": '#include "fs.h"\nint q_f(void) { return 2; }\n',
}


def tree(changes=None):
    """BASE with some files replaced or added."""
    files = dict(BASE)
    files.update(changes or {})
    return Tree(files)


class CheckLayers(unittest.TestCase):
    def test_this_repository_passes(self):
        rc, out = run()
        self.assertEqual(rc, 0, out)
        self.assertIn("format/:", out)
        self.assertIn("dfx_store ->", out)  # the graph is printed
        self.assertNotIn("error:", out)
        self.assertNotIn("warning:", out)  # FS_ALLOWED is empty: no circle is let through

    def test_clean_tree_passes(self):
        with tree() as root:
            rc, out = run(root)
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r"\n  a +-> b\n")
        self.assertRegex(out, r"\n  p +-> fs \[\+ q\]  \| format/a")

    def test_format_include_circle_fails(self):
        with tree({"format/b.h": '#include "a.h"\nint b_f(void);\n'}) as root:
            rc, out = run(root)
        self.assertEqual(rc, 1, out)
        self.assertIn("error: circle in format/: a -> b -> a", out)
        self.assertIn("b.h: a.h", out)  # what makes the edge

    def test_format_call_circle_behind_one_header_fails(self):
        # every file includes one header: only the calls tell the circle
        files = {
            "format/one.h": "int a_f(void);\nint b_f(void);\n",
            "format/a.c": '#include "one.h"\nint a_f(void) { return b_f(); }\n',
            "format/b.c": '#include "one.h"\nint b_f(void) { return a_f() - 1; }\n',
            "fs/p.c": "int p_f(void) { return 0; }\n",
        }
        with Tree(files) as root:
            rc, out = run(root)
        self.assertEqual(rc, 1, out)
        self.assertIn("error: circle in format/: a -> b -> a", out)
        self.assertIn("calls b_f", out)
        self.assertIn("calls a_f", out)

    def test_comments_and_strings_make_no_edge(self):
        quiet_b = ('#include "b.h"\n/* a_f( in a comment */\n// a_f();\n'
                   'const char *b_s = "a_f()";\nint b_f(void) { return \'a\'; }\n')
        with tree({"format/b.c": quiet_b}) as root:
            rc, out = run(root)
        self.assertEqual(rc, 0, out)

    def test_member_access_is_no_call(self):
        bh = "struct s { int a_f; };\nint b_f(void);\n"
        b = ('#include "b.h"\n'
             'int b_f(void) { struct s x = {1}; struct s *p = &x; return x.a_f + p->a_f; }\n')
        with tree({"format/b.h": bh, "format/b.c": b}) as root:
            rc, out = run(root)
        self.assertEqual(rc, 0, out)

    def test_static_names_are_the_files_own(self):
        # b's own static a_f and static variable a_v shadow a's
        a = '#include "a.h"\nint a_v;\nint a_f(void) { return b_f() + a_v; }\n'
        b = ('#include "b.h"\nstatic int a_v = 3;\nstatic int a_f(void) { return a_v; }\n'
             'int b_f(void) { return a_f(); }\n')
        with tree({"format/a.c": a, "format/b.c": b}) as root:
            rc, out = run(root)
        self.assertEqual(rc, 0, out)

    def test_format_including_fs_fails(self):
        b = '#include "b.h"\n#include "fs.h"\nint b_f(void) { return 1; }\n'
        with tree({"format/b.c": b}) as root:
            rc, out = run(root)
        self.assertEqual(rc, 1, out)
        self.assertIn("error: format/b.c includes fs/fs.h", out)

    def test_format_calling_fs_fails(self):
        b = '#include "b.h"\nint b_f(void) { return q_f(); }\n'
        with tree({"format/b.c": b}) as root:
            rc, out = run(root)
        self.assertEqual(rc, 1, out)
        self.assertIn("error: format/b.c uses q_f (fs/q.c)", out)

    def test_format_including_fuse_or_curl_fails(self):
        for header in ("fuse_lowlevel.h", "fuse.h", "fuse3/fuse.h", "curl/curl.h"):
            b = "#include <%s>\nint b_f(void) { return 1; }\n" % header
            with tree({"format/b.c": b}) as root:
                rc, out = run(root)
            self.assertEqual(rc, 1, out)
            self.assertIn("format/b.c includes <%s>" % header, out)
        # fs/ may
        fuse_q = '#include <fuse_lowlevel.h>\n#include <curl/curl.h>\nint q_f(void) { return 2; }\n'
        with tree({"fs/q.c": fuse_q}) as root:
            rc, out = run(root)
        self.assertEqual(rc, 0, out)

    def test_fs_call_circle_fails_unless_allowed(self):
        q = '#include "fs.h"\nint q_f(void) { return p_f(); }\n'
        with tree({"fs/q.c": q}) as root:
            rc, out = run(root)
            self.assertEqual(rc, 1, out)
            self.assertIn("error: circle in fs/: p -> q -> p", out)
            rc, out = run(root, "--allow", "q:p")
            self.assertEqual(rc, 0, out)
            self.assertIn("warning: allowed circle in fs/", out)
            self.assertIn("q -> p (calls p_f)", out)
            # an allowed edge that is not there is said, not an error
            rc, out = run(root, "--allow", "q:p", "--allow", "p:nothing")
            self.assertEqual(rc, 0, out)
            self.assertIn("allowed fs/ edge p -> nothing no longer exists", out)

    def test_global_variable_use_is_an_edge(self):
        q = '#include "fs.h"\nint q_f(void) { return p_count; }\n'
        p = '#include "fs.h"\nint p_count;\nint p_f(void) { return q_f(); }\n'
        with tree({"fs/q.c": q, "fs/p.c": p}) as root:
            rc, out = run(root)
        self.assertEqual(rc, 1, out)
        self.assertIn("calls p_count", out)


if __name__ == "__main__":
    unittest.main()
