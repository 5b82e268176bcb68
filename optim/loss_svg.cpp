// loss.svg: the training and validation loss curves of a run (written with every save).
#include <algorithm>
#include <cmath>
#include <sstream>

#include "autograd/file_io.h"
#include "optim/trainer.h"

namespace ft {

void write_loss_svg(const std::string& path, const std::vector<std::pair<double, double>>& tr,
                    const std::vector<std::pair<double, double>>& va) {
  const double W = 640, H = 400, L = 60, R = 20, T = 30, B = 50;
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  for (auto* s : {&tr, &va})
    for (auto& [x, y] : *s) {
      if (!std::isfinite(y)) continue;
      x0 = std::min(x0, x); x1 = std::max(x1, x); y0 = std::min(y0, y); y1 = std::max(y1, y);
    }
  if (x0 > x1) { x0 = 0; x1 = 1; y0 = 0; y1 = 1; }
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + 1;
  double pad = (y1 - y0) * 0.05;
  y0 -= pad; y1 += pad;
  auto X = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto Y = [&](double y) { return T + (y1 - y) / (y1 - y0) * (H - T - B); };
  std::ostringstream s;
  s.precision(6);
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << W / 2 << "\" y=\"18\" text-anchor=\"middle\">ft training loss</text>\n"
    << "<line x1=\"" << L << "\" y1=\"" << H - B << "\" x2=\"" << W - R << "\" y2=\"" << H - B << "\" stroke=\"black\"/>\n"
    << "<line x1=\"" << L << "\" y1=\"" << T << "\" x2=\"" << L << "\" y2=\"" << H - B << "\" stroke=\"black\"/>\n";
  for (int i = 0; i <= 4; ++i) {
    double yv = y0 + (y1 - y0) * i / 4, xv = x0 + (x1 - x0) * i / 4;
    s << "<text x=\"" << L - 5 << "\" y=\"" << Y(yv) + 4 << "\" text-anchor=\"end\">" << yv << "</text>\n";
    s << "<text x=\"" << X(xv) << "\" y=\"" << H - B + 16 << "\" text-anchor=\"middle\">" << int64_t(xv) << "</text>\n";
  }
  s << "<text x=\"" << W / 2 << "\" y=\"" << H - 10 << "\" text-anchor=\"middle\">step</text>\n";
  auto line = [&](const std::vector<std::pair<double, double>>& v, const char* color) {
    if (v.empty()) return;
    s << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\" points=\"";
    for (auto& [x, y] : v) if (std::isfinite(y)) s << X(x) << "," << Y(y) << " ";
    s << "\"/>\n";
    for (auto& [x, y] : v) if (std::isfinite(y) && v.size() < 60) s << "<circle cx=\"" << X(x) << "\" cy=\"" << Y(y) << "\" r=\"2.5\" fill=\"" << color << "\"/>\n";
  };
  line(tr, "#1f77b4");
  line(va, "#d62728");
  s << "<text x=\"" << W - R - 120 << "\" y=\"" << T + 10 << "\" fill=\"#1f77b4\">train loss</text>\n";
  if (!va.empty()) s << "<text x=\"" << W - R - 120 << "\" y=\"" << T + 26 << "\" fill=\"#d62728\">validation loss</text>\n";
  s << "</svg>\n";
  write_file_atomic(path, s.str());
}

}  // namespace ft
