"""Java and Ruby through the tree-sitter plug-ins: extraction, properties, rewrites and task data,
on small sources written here and checked by hand."""

import json
import random
import zipfile

import pytest

from telly.cli import main
from telly.data import BUILDERS, detect_language
from telly.data.formats import read_bigclonebench, read_concode, read_line_completion
from telly.data.languages import LANGUAGES
from telly.errors import UserError
from telly.study.probe_data import build_probe_set

JAVA, RUBY = LANGUAGES["java"], LANGUAGES["ruby"]

COUNTER_JAVA = """\
package demo;

/** A small class. */
public class Counter {
    private int count;

    /**
     * Returns the {@code total} of the <i>positive</i> values. Zeros are skipped.
     *
     * @param values the values
     */
    public int total(int[] values) {
        int sum = 0; // running sum
        for (int value : values) {
            if (value > 0 && count >= 0) {
                sum += value;
            }
        }
        return sum;
    }

    int size() { return count; }

    abstract void bodiless();
}
"""

SHAPES_RUBY = """\
module Shapes
  class Circle
    # The area of the circle.
    #
    # Uses pi.
    def area(scale = 1)
      r = @radius * scale
      return 0 if r.zero?
      Math::PI * r ** 2
    end

    def label
      "circle"
    end
  end
end
"""


def by_name(functions):
    return {function.func_name: function for function in functions}


def test_java_methods_with_javadoc_first_sentence_and_code_without_it():
    functions = by_name(JAVA.extract_functions(COUNTER_JAVA, "demo/Counter.java", require_docstring=False))
    assert list(functions) == ["Counter.total", "Counter.size"]  # the bodiless method has no code to learn
    total = functions["Counter.total"]
    assert total.language == "java"
    assert total.summary == "Returns the total of the positive values."
    assert total.docstring_tokens == ("Returns", "the", "total", "of", "the", "positive", "values", ".")
    assert total.docstring.startswith("Returns the {@code total}") and "@param values the values" in total.docstring
    assert total.code.startswith("public int total(int[] values) {\n    int sum = 0; // running sum\n")
    assert total.code.endswith("    return sum;\n}")
    assert "/**" not in total.code and total.original_string.startswith("/**\n * Returns")
    assert total.code_tokens[:10] == ("public", "int", "total", "(", "int", "[", "]", "values", ")", "{")
    assert functions["Counter.size"].summary == ""
    documented = JAVA.extract_functions(COUNTER_JAVA, "demo/Counter.java")
    assert [function.func_name for function in documented] == ["Counter.total"]
    record = total.to_codesearchnet("repo", "train")
    assert record["language"] == "java" and record["path"] == "demo/Counter.java"


def test_ruby_methods_with_leading_comment_block():
    functions = by_name(RUBY.extract_functions(SHAPES_RUBY, "shapes.rb", require_docstring=False))
    assert list(functions) == ["Shapes.Circle.area", "Shapes.Circle.label"]
    area = functions["Shapes.Circle.area"]
    assert area.docstring == "The area of the circle.\n\nUses pi."
    assert area.summary == "The area of the circle."
    assert area.code == "def area(scale = 1)\n  r = @radius * scale\n  return 0 if r.zero?\n  Math::PI * r ** 2\nend"
    assert area.original_string.startswith("# The area of the circle.\n#\n# Uses pi.\ndef area")
    assert functions["Shapes.Circle.label"].summary == ""
    assert [f.func_name for f in RUBY.extract_functions(SHAPES_RUBY, "shapes.rb")] == ["Shapes.Circle.area"]


def test_a_method_with_a_syntax_error_is_left_out_and_the_others_kept():
    source = "class A\n  # Good method here.\n  def good\n    1\n  end\n\n  def bad(\n    1 +\n  end\nend\n"
    assert [f.name for f in RUBY.extract_functions(source, "a.rb", require_docstring=False)] == ["good"]


def test_a_method_nested_deeper_than_the_recursion_limit_is_read():
    concatenation = " + ".join(['"s"'] * 3000)  # a binary expression 3,000 levels deep
    source = f"class Deep {{\n    /** Returns a long string value. */\n    String deep() {{\n        return {concatenation};\n    }}\n}}\n"
    [function] = JAVA.extract_functions(source, "Deep.java")
    assert function.func_name == "Deep.deep" and function.code_tokens.count('"s"') == 3000
    assert JAVA.completion_lines(function)[1].count("<STR_LIT>") == 3000


def test_java_lexical_types():
    assert JAVA.lexical_types("int size() { return count; }") == [
        ("int", "KEYWORD"), ("size", "NAME"), ("(", "OPERATOR"), (")", "OPERATOR"), ("{", "OPERATOR"),
        ("return", "KEYWORD"), ("count", "NAME"), (";", "OPERATOR"), ("}", "OPERATOR"),
    ]
    typed = dict(JAVA.lexical_types('String f() { char c = \'x\'; return "a b" + 0x1F + null + this; }'))
    assert typed["'x'"] == "STRING" and typed['"a b"'] == "STRING" and typed["0x1F"] == "NUMBER"
    assert typed["null"] == typed["this"] == typed["char"] == "KEYWORD" and typed["String"] == "NAME"


def test_ruby_lexical_types():
    assert RUBY.lexical_types('def label\n  @name || :none || "circle" || 2.5 || nil\nend') == [
        ("def", "KEYWORD"), ("label", "NAME"), ("@name", "NAME"), ("||", "OPERATOR"), (":none", "STRING"),
        ("||", "OPERATOR"), ('"circle"', "STRING"), ("||", "OPERATOR"), ("2.5", "NUMBER"), ("||", "OPERATOR"),
        ("nil", "KEYWORD"), ("end", "KEYWORD"),
    ]


def test_sbt_of_java_and_ruby():
    assert " ".join(JAVA.sbt("int size() { return count + 1; }")) == (
        "( MethodDeclaration ( IntegralType ) IntegralType ( Identifier_size ) Identifier_size "
        "( FormalParameters ) FormalParameters ( Block ( ReturnStatement ( BinaryExpression "
        "( Identifier_count ) Identifier_count ( + ) + ( DecimalIntegerLiteral ) DecimalIntegerLiteral "
        ") BinaryExpression ) ReturnStatement ) Block ) MethodDeclaration"
    )
    assert " ".join(RUBY.sbt('def label\n  "circle" # a comment\nend')) == (
        "( Method ( Identifier_label ) Identifier_label ( BodyStatement ( String ) String ) BodyStatement ) Method"
    )


@pytest.mark.parametrize("code, expected", [
    ("int size() { return count; }", 1),
    # for, if, &&
    (JAVA.extract_functions(COUNTER_JAVA, "C.java")[0].code, 4),
    # case 1, case 2 and the conditional; `default:` is no decision
    ("int f(int x) { switch (x) { case 1: return 1; case 2: return 2; default: return x > 0 ? 3 : 4; } }", 4),
    # two catch clauses, a while and a do-while, ||
    ("void g() { try { h(); } catch (A a) { } catch (B b) { } while (p || q) { } do { } while (r); }", 6),
])
def test_java_cyclomatic_complexity(code, expected):
    assert JAVA.cyclomatic_complexity(code) == expected


@pytest.mark.parametrize("code, expected", [
    ('def label\n  "circle"\nend', 1),
    ("def area(scale = 1)\n  r = @radius * scale\n  return 0 if r.zero?\n  Math::PI * r ** 2\nend", 2),
    # if, ||, elsif, two whens (the case's else is no decision)
    ("def classify(n)\n  if n < 0 || n.nil?\n    :negative\n  elsif n == 0\n    :zero\n  else\n"
     "    case n\n    when 1 then :one\n    when 2, 3 then :few\n    else :many\n    end\n  end\nend", 6),
    # if and unless modifiers, while modifier, and, conditional, rescue
    ("def run(x)\n  return if x unless y\n  x -= 1 while x > 0 and ok\n  x > 1 ? x : 0\nrescue IOError\n  nil\nend", 7),
])
def test_ruby_cyclomatic_complexity(code, expected):
    assert RUBY.cyclomatic_complexity(code) == expected


JAVA_RENAMING = """\
int shadow(int x) {
    use(total); // a field: read before the local of that name
    int total = this.count + x;
    helper(total);
    return total;
}"""

RUBY_RENAMING = """\
def run(a, limit: 2)
  b = size + a # size: a method call until it is assigned
  b.times { |i| puts i }
  size = 3
  limit + b + size
end"""


def test_java_rename_keeps_fields_methods_and_names_read_before_binding():
    rewrite = JAVA.rewrite(JAVA_RENAMING, random.Random(0), function_names=["other"])
    code = rewrite.code
    assert rewrite.name == "other" and code.startswith("int other(int ") and "x" not in code.split()
    assert "this.count" in code and "helper(total)" in code and code.count("total") == 4
    assert "//" not in code  # comments dropped
    assert rewrite.applied == ("rename", "reformat")
    assert JAVA.canonical_form(code) == JAVA.canonical_form(JAVA_RENAMING) == rewrite.original_canonical_form


def test_ruby_rename_keeps_keyword_parameters_calls_and_names_read_before_binding():
    rewrite = RUBY.rewrite(RUBY_RENAMING, random.Random(0))
    code = rewrite.code
    assert "limit: 2" in code and code.count("size") == 3 and ".times" in code and "puts" in code
    first_line = code.split("\n")[0]
    assert first_line != "def run(a, limit: 2)" and first_line.startswith("def run(")
    assert " b " not in code and "|i|" not in code  # the locals got new names
    assert RUBY.canonical_form(code) == RUBY.canonical_form(RUBY_RENAMING)


def test_a_method_that_reads_its_locals_by_name_keeps_them():
    code = "def show(a)\n  b = a\n  binding.local_variable_get(:b)\nend"
    assert "b = a" in RUBY.rewrite(code, random.Random(0)).code


def test_java_reformat_moves_braces_and_changes_the_indent_width():
    code = "void f(int n) {\n    if (n > 0) {\n        g(n);\n    }\n}"
    rewrite = JAVA.rewrite(code, random.Random(1))
    lines = rewrite.code.split("\n")
    assert lines[1] == "{" and lines[0].startswith("void f(int ")
    indents = {len(line) - len(line.lstrip()) for line in lines if line.strip()}
    assert 4 not in indents and len(indents) == 3  # three levels, a width other than 4


def test_ruby_reformat_keeps_heredoc_lines():
    code = "def banner(name)\n  text = <<~EOS\n    Hello\n      #{name}  \n  EOS\n  text\nend"
    for seed in range(5):
        rewritten = RUBY.rewrite(code, random.Random(seed)).code
        assert "\n    Hello\n      #{" in rewritten and "}  \n  EOS\n" in rewritten


@pytest.mark.parametrize("language, source", [(JAVA, COUNTER_JAVA), (RUBY, SHAPES_RUBY)])
def test_every_rewrite_parses_and_is_the_same_code_up_to_names_and_layout(language, source):
    for function in language.extract_functions(source, "f", require_docstring=False):
        for seed in range(10):
            rewrite = language.rewrite(function.code, random.Random(seed), function_names=["alpha", "beta"])
            assert rewrite is not None and rewrite.code != function.code
            assert language.canonical_form(rewrite.code) == language.canonical_form(function.code)


def test_java_rewrites_of_the_real_test_corpus_all_parse(java_sources):
    for path in sorted(java_sources.glob("*.java"))[:10]:
        for function in JAVA.extract_functions(path.read_text(), path.name):
            rewrite = JAVA.rewrite(function.code, random.Random(0), function_names=["renamed"])
            assert rewrite.applied == ("rename", "reformat")
            assert JAVA.lexical_types(rewrite.code)  # raises if it does not parse


def test_java_generation_and_completion_records():
    total = JAVA.extract_functions(COUNTER_JAVA, "C.java")[0]
    signature, body = JAVA.generation_example(total)
    assert signature == "public int total ( int [ ] values )"
    assert body.startswith("int sum = 0 ; for ( int value : values ) { if (") and body.endswith("return sum ;")
    assert JAVA.completion_lines(total) == [
        "public int total ( int [ ] values ) {", "int sum = <NUM_LIT> ;", "for ( int value : values ) {",
        "if ( value > <NUM_LIT> && count >= <NUM_LIT> ) {", "sum += value ;", "}", "}", "return sum ;", "}",
    ]
    literals = JAVA.extract_functions('class A { void f() {\n  g("x", \'y\', 1.5);\n} }', "A.java", require_docstring=False)[0]
    assert JAVA.completion_lines(literals)[1] == "g ( <STR_LIT> , <CHAR_LIT> , <NUM_LIT> ) ;"


def test_java_task_data_in_the_official_formats(java_sources, tmp_path):
    for task in ("code-search", "clone-detection", "code-generation", "code-completion"):
        BUILDERS[task]([java_sources], tmp_path / task, seed=0, language="java")
    search = [json.loads(line) for line in (tmp_path / "code-search" / "train.jsonl").read_text().splitlines()]
    assert {record["language"] for record in search} == {"java"} and len(search) > 100
    assert all("/**" not in record["code"] for record in search)
    pairs = read_bigclonebench(tmp_path / "clone-detection", "train").pairs
    assert sum(label for _, _, label in pairs) == len(pairs) / 2 > 50
    generation = read_concode(tmp_path / "code-generation", "test")
    assert generation and all(" signature: public int " in record["nl"] for record in generation)
    completion = read_line_completion(tmp_path / "code-completion", "test")
    assert completion and all(record["input"].startswith("<s> public int ") for record in completion)
    assert all('"' not in record["input"] + record["gt"] for record in completion)  # <STR_LIT>


def test_ruby_clone_pairs(ruby_sources, tmp_path):
    summary = BUILDERS["clone-detection"]([ruby_sources], tmp_path, seed=0, language="ruby")
    clones = read_bigclonebench(tmp_path, "train")
    # Every method has a parameter to rename and indented lines to re-indent.
    assert summary.rewrites == {"rename": 160, "reformat": 160} and summary.left_out == {}
    assert "160 rename, 160 reformat" in str(summary)
    for _, right, _ in clones.pairs:
        assert int(right) % 2 == 1 and RUBY.lexical_types(clones.functions[right])  # a rewrite, and it parses


def test_sources_in_a_zip_archive_are_read_in_place(java_sources, tmp_path):
    archive = tmp_path / "src.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(java_sources.glob("*.java")):
            zipped.write(path, f"java.base/demo/{path.name}")
        zipped.writestr("java.base/demo/test/Ignored.java", "class Ignored { /** Not read at all. */ void f() { g(); } }")
    summary = BUILDERS["code-search"]([archive], tmp_path / "out", seed=0, language="java")
    from_folder = BUILDERS["code-search"]([java_sources], tmp_path / "folder", seed=0, language="java")
    assert summary.functions == from_folder.functions == 160 and summary.files_seen == 40
    record = json.loads((tmp_path / "out" / "train.jsonl").read_text().splitlines()[0])
    assert record["repo"] == "src" and record["path"].startswith("java.base/demo/Case")


def test_the_language_is_told_by_the_file_endings(java_sources, ruby_sources, tmp_path):
    assert detect_language([java_sources]) == "java" and detect_language([ruby_sources]) == "ruby"
    with pytest.raises(UserError, match="several languages"):
        detect_language([java_sources, ruby_sources])
    assert detect_language([tmp_path]) is None


def test_cli_builds_java_data_and_rejects_mixed_sources(java_sources, ruby_sources, tmp_path, capsys):
    assert main(["data", "build", str(java_sources), "--task", "code-generation", "--out", str(tmp_path / "gen")]) == 0
    assert "wrote code-generation java data" in capsys.readouterr().out
    assert main(["data", "build", str(java_sources), str(ruby_sources), "--out", str(tmp_path / "mixed")]) == 2
    assert "several languages" in capsys.readouterr().err
    assert main(["data", "build", str(ruby_sources), "--language", "cobol", "--out", str(tmp_path / "x")]) == 2


def test_probe_set_of_ruby_functions(ruby_sources):
    probe_set = build_probe_set([ruby_sources], functions=20, seed=0, language="ruby")
    assert probe_set.language == "ruby" and len(probe_set.train) == 16 and len(probe_set.test) == 4
    for function in probe_set.train + probe_set.test:
        assert function.typed_tokens == tuple(RUBY.lexical_types(function.code))
        assert function.complexity_class == min(6, RUBY.cyclomatic_complexity(function.code))
        assert len(set(function.rewrites)) == 2 and function.code not in function.rewrites
        assert function.sbt[:2] == ("(", "Method")


def test_probe_cli_on_java_sources(tiny_bert_dir, java_sources, tmp_path):
    argv = ["probe", "--model", str(tiny_bert_dir), "--sources", str(java_sources), "--functions", "20",
            "--out", str(tmp_path), "--no-feature-cache", "--max-length", "64", "--property", "invariance"]
    assert main(argv) == 0  # the invariance probe reads the Java rewrites' tokens too
    report = json.loads((tmp_path / "probe.json").read_text())
    assert set(report["properties"]) == {"invariance"}
    assert report["functions"] == {"train": 16, "test": 4}
