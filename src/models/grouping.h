#pragma once
// Thousands separators for fmt's locale-aware integers: fmt::format(grouping(), "{:L}", 1234567)
// is "1,234,567", whatever the global locale. (rmt-inspect uses it too.)
#include <locale>
#include <string>

namespace rmt::detail {

inline const std::locale& grouping() {
  struct Thousands : std::numpunct<char> {
    char do_thousands_sep() const override { return ','; }
    std::string do_grouping() const override { return "\3"; }
  };
  static const std::locale locale(std::locale::classic(), new Thousands);
  return locale;
}

}  // namespace rmt::detail
