"""POJ-104 (CodeXGLUE's Clone-detection-POJ-104 layout): the reader, its errors, and the semantic probe."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest

from telly.cli import main
from telly.data.poj104 import read_poj104
from telly.errors import UserError
from telly.metrics import random_ranking_map_at_r

EMAIL = Path(sysconfig.get_paths()["stdlib"]) / "email"

# Three C programs by different "authors" for each of five problems, as students write them.
PROGRAMS = {
    "1": [  # sum of the digits of n
        "#include <stdio.h>\nint main() {\n  int n, s = 0;\n  scanf(\"%d\", &n);\n  while (n > 0) { s += n % 10; n /= 10; }\n"
        "  printf(\"%d\\n\", s);\n  return 0;\n}\n",
        "#include<stdio.h>\nint digits(int x){ if(x==0) return 0; return x%10+digits(x/10); }\n"
        "int main(){int a;scanf(\"%d\",&a);printf(\"%d\",digits(a));}\n",
        "#include <stdio.h>\n#include <string.h>\nint main(void) {\n  char buf[32]; int total = 0;\n  scanf(\"%s\", buf);\n"
        "  for (int i = 0; i < (int)strlen(buf); i++) total += buf[i] - '0';\n  printf(\"%d\\n\", total);\n}\n",
    ],
    "2": [  # the largest of n integers
        "#include <stdio.h>\nint main() {\n  int n, x, best;\n  scanf(\"%d\", &n);\n  scanf(\"%d\", &best);\n"
        "  for (int i = 1; i < n; i++) { scanf(\"%d\", &x); if (x > best) best = x; }\n  printf(\"%d\\n\", best);\n}\n",
        "#include<stdio.h>\nint a[1000];\nint main(){int n,i,m;scanf(\"%d\",&n);for(i=0;i<n;i++)scanf(\"%d\",&a[i]);\n"
        "m=a[0];for(i=1;i<n;i++)m=a[i]>m?a[i]:m;printf(\"%d\",m);return 0;}\n",
        "#include <stdio.h>\n#include <stdlib.h>\nint cmp(const void *p, const void *q) { return *(int *)q - *(int *)p; }\n"
        "int main() {\n  int n; scanf(\"%d\", &n);\n  int *v = malloc(n * sizeof(int));\n"
        "  for (int i = 0; i < n; i++) scanf(\"%d\", v + i);\n  qsort(v, n, sizeof(int), cmp);\n  printf(\"%d\\n\", v[0]);\n}\n",
    ],
    "3": [  # reverse a string
        "#include <stdio.h>\n#include <string.h>\nint main() {\n  char s[100];\n  scanf(\"%s\", s);\n"
        "  for (int i = strlen(s) - 1; i >= 0; i--) putchar(s[i]);\n  putchar('\\n');\n}\n",
        "#include<stdio.h>\n#include<string.h>\nvoid rev(char*s,int i,int j){char t;while(i<j){t=s[i];s[i]=s[j];s[j]=t;i++;j--;}}\n"
        "int main(){char s[200];gets(s);rev(s,0,strlen(s)-1);puts(s);}\n",
        "#include <stdio.h>\nvoid back(const char *p) { if (*p) { back(p + 1); putchar(*p); } }\n"
        "int main(void) { char line[256]; scanf(\"%255s\", line); back(line); printf(\"\\n\"); return 0; }\n",
    ],
    "4": [  # count the vowels of a line
        "#include <stdio.h>\nint main() {\n  char c; int n = 0;\n  while ((c = getchar()) != '\\n' && c != EOF)\n"
        "    if (c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u') n++;\n  printf(\"%d\\n\", n);\n}\n",
        "#include<stdio.h>\n#include<string.h>\nint main(){char s[500];int i,k=0;gets(s);for(i=0;s[i];i++)"
        "if(strchr(\"aeiouAEIOU\",s[i]))k++;printf(\"%d\",k);}\n",
        "#include <stdio.h>\n#include <ctype.h>\nint vowel(int c) { c = tolower(c); switch (c) { case 'a': case 'e': "
        "case 'i': case 'o': case 'u': return 1; } return 0; }\nint main() { int c, count = 0;\n"
        "  while ((c = getchar()) != EOF) count += vowel(c);\n  printf(\"%d\\n\", count);\n}\n",
    ],
    "5": [  # greatest common divisor
        "#include <stdio.h>\nint main() {\n  int a, b, t;\n  scanf(\"%d %d\", &a, &b);\n"
        "  while (b != 0) { t = a % b; a = b; b = t; }\n  printf(\"%d\\n\", a);\n}\n",
        "#include<stdio.h>\nint gcd(int x,int y){return y?gcd(y,x%y):x;}\nint main(){int m,n;scanf(\"%d%d\",&m,&n);"
        "printf(\"%d\",gcd(m,n));}\n",
        "#include <stdio.h>\nint main(void) {\n  int a, b, d;\n  scanf(\"%d%d\", &a, &b);\n"
        "  for (d = a < b ? a : b; d > 1; d--) if (a % d == 0 && b % d == 0) break;\n  printf(\"%d\\n\", d);\n}\n",
    ],
}
SPLIT_PROBLEMS = {"train": ["1", "2", "3"], "valid": ["4"], "test": ["4", "5"]}


def write_poj104(folder: Path, splits: dict[str, list[str]] = SPLIT_PROBLEMS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    index = 0
    for split, problems in splits.items():
        lines = []
        for problem in problems:
            for code in PROGRAMS[problem]:
                lines.append(json.dumps({"label": problem, "index": str(index), "code": code}))
                index += 1
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def poj104(tmp_path):
    return write_poj104(tmp_path / "poj104")


def test_reader_samples_every_problem_of_each_split_alike(poj104):
    sample = read_poj104(poj104, programs=10, test_fraction=0.2, seed=0)
    # 8 train programs over 3 problems: 2 each; 2 test programs over 2 problems: at least 2 each.
    assert sorted(p.problem for p in sample.train) == ["1", "1", "2", "2", "3", "3"]
    assert sorted(p.problem for p in sample.test) == ["4", "4", "5", "5"]
    assert all(p.code in PROGRAMS[p.problem] for p in sample.train + sample.test)
    assert sample.problems == {"train": 3, "test": 2}
    assert read_poj104(poj104, programs=10, test_fraction=0.2, seed=0) == sample
    whole = read_poj104(poj104, programs=1000, test_fraction=0.2, seed=0)  # more than there is: all of it
    assert len(whole.train) == 9 and len(whole.test) == 6


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "test.jsonl").unlink(), r"no such file: .*test\.jsonl"),
        (lambda f: (f / "train.jsonl").write_text('{"label": "1", "index": "0"}\n'),
         r"train\.jsonl line 1: a POJ-104 record needs \"code\""),
        (lambda f: (f / "train.jsonl").write_text('{"label": "1", "code": "int main() {}"\n'),
         r"train\.jsonl line 1: not valid JSON"),
        (lambda f: write_poj104(f, {"train": ["1", "2"], "test": ["2", "5"]}), r"share problems \(2\)"),
        (lambda f: write_poj104(f, {"train": ["1"], "test": []}), r"test\.jsonl: no problem has two programs"),
    ],
)
def test_a_malformed_folder_is_one_clear_error(poj104, damage, message):
    damage(poj104)
    with pytest.raises(UserError, match=message):
        read_poj104(poj104, programs=10, test_fraction=0.2)


def probe_argv(tiny_bert_dir, tmp_path, *extra):
    return ["probe", "--model", str(tiny_bert_dir), "--functions", "20", "--sources", str(EMAIL), "--max-length", "96",
            "--out", str(tmp_path / "probe"), "--no-feature-cache", "--weight-seeds", "2", *extra]


def test_semantic_probe_trains_on_train_problems_and_scores_unseen_ones(tiny_bert_dir, poj104, tmp_path):
    assert main(probe_argv(tiny_bert_dir, tmp_path, "--property", "semantic", "--poj104", str(poj104))) == 0
    report = json.loads((tmp_path / "probe" / "probe.json").read_text())
    semantic = report["properties"]["semantic"]
    # 20 programs: 16 for train (3 problems: 5 each wanted, 3 each there), 4 for test (2 problems: 2 each).
    assert report["poj104_programs"] == {"train": 9, "test": 4}
    assert semantic["train_items"] == 9 and semantic["test_items"] == 4
    assert semantic["metric"] == "map@r"
    assert semantic["baseline"] == pytest.approx(random_ranking_map_at_r([0, 0, 1, 1]))
    assert "unseen test problems" in report["protocol"]["semantic"]
    assert len(semantic["weights_by_seed"]) == len(semantic["weighted_by_seed"]) == 2
