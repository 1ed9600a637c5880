// Image decoding and the evaluation preprocessing, against PIL's results (tests/data/preprocess_*,
// made by tests/data/gen/make_preprocess_fixtures.py from the same synthetic images as here).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <ftw.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include "reference.h"
#include "tool_runner.h"
#include "rmt/data/image.h"
#include "rmt/data/preprocess.h"
#include "rmt/io/npy.h"

#include "image_writer.h"

namespace {

namespace fs = std::filesystem;

using rmt::test::remove_tree;
using rmt::Image;

// The synthetic test image of make_preprocess_fixtures.py's pattern(): gradients, a wrapping hash
// (sharp jumps, so the cubic's overshoot is clipped) and a checkerboard.
Image pattern(int64_t w, int64_t h) {
  Image img(w, h);
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) {
      img.at(x, y, 0) = static_cast<uint8_t>((x * 255 / std::max<int64_t>(w - 1, 1) +
                                               (x * x * 7 + y * 13) % 61) & 255);
      img.at(x, y, 1) = static_cast<uint8_t>(((y * 255 / std::max<int64_t>(h - 1, 1)) ^
                                               ((x * 5 + y * y * 3) % 97)) & 255);
      img.at(x, y, 2) = ((x / 4 + y / 3) % 2 == 1) ? 255 : 0;
    }
  }
  return img;
}

at::Tensor as_tensor(const Image& img) {  // (H, W, 3) uint8
  return at::from_blob(const_cast<uint8_t*>(img.data()), {img.height, img.width, 3}, at::kByte)
      .clone();
}

// Largest difference in 8-bit levels; -1 when the shapes differ.
int64_t max_level_difference(const Image& actual, const at::Tensor& expected) {
  if (expected.dim() != 3 || expected.size(0) != actual.height || expected.size(1) != actual.width ||
      expected.size(2) != 3) {
    ADD_FAILURE() << "expected shape " << expected.sizes() << ", found " << actual.height << "x"
                  << actual.width << "x3";
    return -1;
  }
  return (as_tensor(actual).to(at::kInt) - expected.to(at::kInt)).abs().max().item<int64_t>();
}

double max_abs_difference(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  if (a.sizes() != b.sizes()) return 1e9;
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

at::Tensor fixture(const std::string& name) { return rmt::read_npy(rmt::test::data_path(name)); }

class Preprocess : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("rmt_test_preprocess_" + std::to_string(::getpid()) + "_" + info->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { remove_tree(dir_.string()); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  std::string write_png(const std::string& name, const Image& img) const {
    const auto p = path(name);
    EXPECT_TRUE(stbi_write_png(p.c_str(), int(img.width), int(img.height), 3, img.data(),
                               int(img.width * 3)));
    return p;
  }
  std::string write_bmp(const std::string& name, const Image& img) const {
    const auto p = path(name);
    EXPECT_TRUE(stbi_write_bmp(p.c_str(), int(img.width), int(img.height), 3, img.data()));
    return p;
  }
  std::string write_bytes(const std::string& name, const std::string& bytes) const {
    const auto p = path(name);
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  }
  static std::string read_bytes(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  fs::path dir_;
};

// --- Decoding -------------------------------------------------------------------------------

TEST_F(Preprocess, DecodesPngAndBmpExactly) {
  for (auto [w, h] : {std::pair{40, 30}, std::pair{300, 200}, std::pair{1, 1}, std::pair{7, 3}}) {
    const Image img = pattern(w, h);
    for (const auto& file : {write_png("p.png", img), write_bmp("p.bmp", img)}) {
      const Image decoded = rmt::decode_image(file);
      ASSERT_EQ(decoded.width, w) << file;
      ASSERT_EQ(decoded.height, h) << file;
      EXPECT_EQ(decoded.pixels, img.pixels) << file << " " << w << "x" << h;
    }
  }
}

TEST_F(Preprocess, GrayscaleAndAlphaBecomeRgb) {
  const int w = 9, h = 5;
  std::vector<uint8_t> gray(w * h), gray_alpha(w * h * 2), rgba(w * h * 4);
  for (int i = 0; i < w * h; ++i) {
    gray[i] = static_cast<uint8_t>(i * 5);
    gray_alpha[2 * i] = static_cast<uint8_t>(i * 3);
    gray_alpha[2 * i + 1] = static_cast<uint8_t>(255 - i);
    for (int c = 0; c < 4; ++c) rgba[4 * i + c] = static_cast<uint8_t>(i * 4 + c * 50);
  }
  ASSERT_TRUE(stbi_write_png(path("g.png").c_str(), w, h, 1, gray.data(), w));
  ASSERT_TRUE(stbi_write_png(path("ga.png").c_str(), w, h, 2, gray_alpha.data(), w * 2));
  ASSERT_TRUE(stbi_write_png(path("rgba.png").c_str(), w, h, 4, rgba.data(), w * 4));
  const Image g = rmt::decode_image(path("g.png"));
  const Image ga = rmt::decode_image(path("ga.png"));
  const Image c = rmt::decode_image(path("rgba.png"));
  for (int i = 0; i < w * h; ++i) {
    for (int k = 0; k < 3; ++k) {
      // PIL's convert("RGB"): L and LA replicate the gray value; RGBA drops alpha.
      EXPECT_EQ(g.pixels[3 * i + k], gray[i]);
      EXPECT_EQ(ga.pixels[3 * i + k], gray_alpha[2 * i]);
      EXPECT_EQ(c.pixels[3 * i + k], rgba[4 * i + k]);
    }
  }
}

TEST_F(Preprocess, GifFirstFrameAndPalettePngMatchPil) {
  for (const std::string name : {"preprocess_anim.gif", "preprocess_palette.png"}) {
    const Image img = rmt::decode_image(rmt::test::data_path(name));
    EXPECT_EQ(max_level_difference(img, fixture(name + ".rgb.npy")), 0) << name;
  }
}

TEST_F(Preprocess, JpegIsCloseToPil) {
  // stb_image and libjpeg-turbo (PIL) differ in IDCT and chroma upsampling.
  const Image img = rmt::decode_image(rmt::test::data_path("preprocess_photo.jpg"));
  const int64_t diff = max_level_difference(img, fixture("preprocess_photo.jpg.rgb.npy"));
  std::cout << "JPEG: stb_image vs PIL (libjpeg-turbo): max difference " << diff << "/255\n";
  RecordProperty("jpeg_max_difference", std::to_string(diff));
  EXPECT_GE(diff, 0);
  EXPECT_LE(diff, 12);
}

TEST_F(Preprocess, UnreadableFilesThrowNamingTheFile) {
  const std::string png = read_bytes(write_png("good.png", pattern(30, 20)));
  const std::string bmp = read_bytes(write_bmp("good.bmp", pattern(30, 20)));
  const std::string jpg = read_bytes(rmt::test::data_path("preprocess_photo.jpg"));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {write_bytes("empty.png", ""), "empty"},
      {write_bytes("text.jpg", "this is not an image\n"), "not a JPEG, PNG, BMP or GIF"},
      {write_bytes("truncated.png", png.substr(0, png.size() / 2)), "PNG"},
      {write_bytes("truncated.jpg", jpg.substr(0, jpg.size() / 2)), "truncated JPEG"},
      {write_bytes("truncated.bmp", bmp.substr(0, bmp.size() - 100)), "truncated BMP"},
      {write_bytes("header_only.png", png.substr(0, 8)), "PNG"},
      {path("missing.png"), "cannot open"},
      {dir_.string(), "directory"},
  };
  for (const auto& [file, problem] : cases) {
    try {
      rmt::decode_image(file);
      ADD_FAILURE() << file << ": expected an exception";
    } catch (const std::runtime_error& e) {
      const std::string message = e.what();
      EXPECT_EQ(message.rfind(file + ": ", 0), 0u) << message;
      EXPECT_NE(message.find(problem), std::string::npos) << message;
    }
  }
  EXPECT_THROW(rmt::load_image(path("missing.png")), std::runtime_error);
}

TEST_F(Preprocess, ImageExtensions) {
  EXPECT_TRUE(rmt::has_image_extension("a/b/c.JPG"));
  EXPECT_TRUE(rmt::has_image_extension("x.jpeg"));
  EXPECT_TRUE(rmt::has_image_extension("x.Png"));
  EXPECT_TRUE(rmt::has_image_extension("x.bmp"));
  EXPECT_TRUE(rmt::has_image_extension("x.gif"));
  EXPECT_FALSE(rmt::has_image_extension("x.txt"));
  EXPECT_FALSE(rmt::has_image_extension("png"));
  EXPECT_FALSE(rmt::has_image_extension("dir.png/file"));
}

// --- Geometry -------------------------------------------------------------------------------

TEST_F(Preprocess, SizesAsTorchvisionComputesThem) {
  rmt::PreprocessOptions o;
  EXPECT_EQ(o.resize_size(), 248);  // floor(224 / 0.9)
  o.input_size = 384;
  EXPECT_EQ(o.resize_size(), 426);
  o.input_size = 224;
  o.crop_pct = 0.875;
  EXPECT_EQ(o.resize_size(), 256);
  // int(size * long / short), {width, height}.
  EXPECT_EQ(rmt::shorter_side_size(300, 200, 248), std::make_pair(int64_t(372), int64_t(248)));
  EXPECT_EQ(rmt::shorter_side_size(40, 30, 248), std::make_pair(int64_t(330), int64_t(248)));
  EXPECT_EQ(rmt::shorter_side_size(30, 90, 17), std::make_pair(int64_t(17), int64_t(51)));
  EXPECT_EQ(rmt::shorter_side_size(333, 500, 248), std::make_pair(int64_t(248), int64_t(372)));
  EXPECT_EQ(rmt::shorter_side_size(640, 427, 248), std::make_pair(int64_t(371), int64_t(248)));
  o.crop_pct = 0;
  EXPECT_THROW(o.validate(), std::invalid_argument);
}

TEST_F(Preprocess, CenterCropRoundsHalvesToEven) {
  Image img(11, 10);
  for (int64_t y = 0; y < 10; ++y) {
    for (int64_t x = 0; x < 11; ++x) img.at(x, y, 0) = static_cast<uint8_t>(10 * y + x);
  }
  // Python: int(round(5 / 2.0)) == 2 and int(round(7 / 2.0)) == 4.
  const Image a = rmt::center_crop(img, 4, 5);  // left round(3.5) = 4, top round(2.5) = 2
  EXPECT_EQ(a.at(0, 0, 0), 10 * 2 + 4);
  const Image b = rmt::center_crop(img, 6, 3);  // left round(2.5) = 2, top round(3.5) = 4
  EXPECT_EQ(b.at(0, 0, 0), 10 * 4 + 2);
  // Larger than the image: padded with black, (crop - size) // 2 on the left and top.
  // 11 -> 14 wide: one black column on the left, two on the right.
  const Image c = rmt::center_crop(img, 14, 10);
  EXPECT_EQ(c.at(0, 3, 0), 0);
  EXPECT_EQ(c.at(1, 3, 0), 30);
  EXPECT_EQ(c.at(2, 3, 0), 31);
  EXPECT_EQ(c.at(11, 3, 0), 40);
  EXPECT_EQ(c.at(12, 3, 0), 0);
  EXPECT_EQ(c.at(13, 3, 0), 0);
}

// --- Against PIL ----------------------------------------------------------------------------

TEST_F(Preprocess, ResizeMatchesPilExactly) {
  const Image a = rmt::decode_image(write_bmp("a.bmp", pattern(300, 200)));
  EXPECT_EQ(max_level_difference(rmt::resize_bicubic(a, 97, 61),
                                 fixture("preprocess_300x200_to_97x61.u8.npy")), 0);
  const Image b = rmt::decode_image(write_png("b.png", pattern(40, 30)));
  EXPECT_EQ(max_level_difference(rmt::resize_bicubic(b, 23, 41),
                                 fixture("preprocess_40x30_to_23x41.u8.npy")), 0);
  // Width enlarged, height shrunk: Pillow 13 runs the vertical pass first, Pillow 12 did not.
  EXPECT_EQ(max_level_difference(rmt::resize_bicubic(b, 57, 13),
                                 fixture("preprocess_40x30_to_57x13.u8.npy")), 0);
  EXPECT_EQ(max_level_difference(
                rmt::resize_bicubic(b, 57, 13, rmt::PillowPassOrder::HorizontalFirst),
                fixture("preprocess_40x30_to_57x13_hfirst.u8.npy")), 0);
  EXPECT_EQ(rmt::resize_bicubic(b, 40, 30).pixels, b.pixels);  // same size: a copy
}

TEST_F(Preprocess, DefaultTransformMatchesPilExactly) {
  const Image img = rmt::decode_image(write_png("small.png", pattern(40, 30)));
  // Resize(248, bicubic) + CenterCrop(224), as 8-bit pixels.
  const Image cropped = rmt::center_crop(rmt::resize_shorter_side(img, 248), 224, 224);
  EXPECT_EQ(max_level_difference(cropped, fixture("preprocess_40x30_s224.u8.npy")), 0);
  // And the whole transform: the same pixels, normalized.
  const rmt::PreprocessOptions options;
  const at::Tensor x = rmt::preprocess(img, options);
  ASSERT_EQ(x.sizes(), (at::IntArrayRef{3, 224, 224}));
  EXPECT_EQ(x.scalar_type(), at::kFloat);
  const at::Tensor expected = rmt::to_normalized_tensor(cropped, options.mean, options.stddev);
  EXPECT_TRUE(at::equal(x, expected));
  const at::Tensor pixel = as_tensor(cropped).permute({2, 0, 1}).to(at::kFloat).div(255);
  const at::Tensor mean = at::tensor({0.485f, 0.456f, 0.406f}).view({3, 1, 1});
  const at::Tensor std = at::tensor({0.229f, 0.224f, 0.225f}).view({3, 1, 1});
  EXPECT_EQ(max_abs_difference(x, (pixel - mean) / std), 0.0);
  EXPECT_TRUE(at::equal(rmt::load_image(path("small.png")), x));
}

TEST_F(Preprocess, OtherInputSizesMatchPilExactly) {
  struct Case {
    int64_t w, h, size;
    const char* fixture;
    rmt::PillowPassOrder order;
  };
  const Case cases[] = {
      {40, 30, 16, "preprocess_40x30_s16.npy", rmt::PillowPassOrder::Pillow13},
      {300, 200, 64, "preprocess_300x200_s64.npy", rmt::PillowPassOrder::Pillow13},
      // Three times taller than wide: Pillow 13 and Pillow <= 12 disagree here.
      {30, 90, 16, "preprocess_30x90_s16.npy", rmt::PillowPassOrder::Pillow13},
      {30, 90, 16, "preprocess_30x90_s16_hfirst.npy", rmt::PillowPassOrder::HorizontalFirst},
  };
  for (const auto& c : cases) {
    const Image img = rmt::decode_image(write_png("in.png", pattern(c.w, c.h)));
    rmt::PreprocessOptions options;
    options.input_size = c.size;
    options.pass_order = c.order;
    const at::Tensor x = rmt::preprocess(img, options);
    EXPECT_EQ(max_abs_difference(x, fixture(c.fixture)), 0.0) << c.fixture;
  }
}

}  // namespace
