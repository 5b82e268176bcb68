// Runaway chat templates (the cases of FuzzRegressions.JinjaRunawayIsBounded): each must end in an
// ft::Error, from the render budget (data/jinja_util.h), in well under a second. The unit test bounds
// their work (budget units); this benchmark times them. Target: < 0.5 s each in the Release build.
//   build/bench/bench_jinja --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "autograd/error.h"
#include "data/chat_template.h"
#include "data/jinja_util.h"

namespace {

const std::vector<std::string>& cases() {
  static const std::vector<std::string> c = {
      "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
      "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
      "{% set s = 'a' * 100000 %}{{ (s * 100000)|length }}",
      "{{ (['a' * 100000] * 100000)|length }}",
      "{{ ([1] * 100000 * 100)|length }}",
      "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
      "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
      "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
      "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l }}",
      "{{ 'x'|tojson(indent=3000000000) }}{{ [1, [2]]|tojson(indent=3000000000) }}",
      "{{ 'a\nb'|indent(3000000000) }}",
      "{{ ('a' * 100000)|replace('', 'b' * 1000) }}",
      "{{ '{99999999999999999999}'.format(1) }}",
      "{% set t = 'a' * 16000000 %}{% set p = 'a' * 8000000 ~ 'b' %}{{ p in t }}",
      "{% set t = 'a' * 16000000 %}{% set p = 'a' * 8000000 ~ 'b' %}{{ t.count(p) }}",
      "{% set t = 'a' * 16000000 %}{{ t.strip('b' * 8000000) }}",
      "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}",
      "{% set l = range(100000)|list %}{% for i in range(100000) %}{% if -1 in l %}{% endif %}{% endfor %}",
  };
  return c;
}

void BM_JinjaRunaway(benchmark::State& state) {
  const std::string& tmpl = cases()[size_t(state.range(0))];
  const ft::ChatTemplate t(tmpl, "t");
  const nlohmann::ordered_json msgs = nlohmann::ordered_json::array({{{"role", "user"}, {"content", "hi"}}});
  int64_t work = 0;
  for (auto _ : state) {
    try {
      t.render(msgs);
      state.SkipWithError("the template rendered: it should have stopped");
    } catch (const ft::Error&) {
    }
    work = ft::jinja::last_render_work();
  }
  state.counters["work_units"] = double(work);
  state.SetLabel(tmpl.substr(0, 60));
}
BENCHMARK(BM_JinjaRunaway)->DenseRange(0, 17)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace
