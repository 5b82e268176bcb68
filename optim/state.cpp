#include "optim/state.h"

#include "autograd/file_io.h"

#include <hdf5.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <fcntl.h>
#include <unistd.h>

namespace ft {

namespace fs = std::filesystem;

namespace {

struct H5Quiet {  // HDF5 prints its own error stack unless told not to; we report through ft::Error
  H5E_auto2_t fn; void* data;
  H5Quiet() { H5Eget_auto2(H5E_DEFAULT, &fn, &data); H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }
  ~H5Quiet() { H5Eset_auto2(H5E_DEFAULT, fn, data); }
};

struct Hid {  // closes an HDF5 handle
  hid_t id;
  herr_t (*close)(hid_t);
  Hid(hid_t i, herr_t (*c)(hid_t)) : id(i), close(c) {}
  ~Hid() { if (id >= 0) close(id); }
  operator hid_t() const { return id; }
};

void write_attr_i64(hid_t loc, const char* name, int64_t v) {
  Hid sp(H5Screate(H5S_SCALAR), H5Sclose);
  Hid a(H5Acreate2(loc, name, H5T_NATIVE_INT64, sp, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  FT_CHECK(a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0, "HDF5: cannot write attribute ", name);
}
void write_attr_u64(hid_t loc, const char* name, uint64_t v) {
  Hid sp(H5Screate(H5S_SCALAR), H5Sclose);
  Hid a(H5Acreate2(loc, name, H5T_NATIVE_UINT64, sp, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  FT_CHECK(a >= 0 && H5Awrite(a, H5T_NATIVE_UINT64, &v) >= 0, "HDF5: cannot write attribute ", name);
}
void write_attr_str(hid_t loc, const char* name, const std::string& s) {
  Hid t(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(t, std::max<size_t>(s.size(), 1));
  Hid sp(H5Screate(H5S_SCALAR), H5Sclose);
  Hid a(H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  std::string buf = s.empty() ? std::string(1, '\0') : s;
  FT_CHECK(a >= 0 && H5Awrite(a, t, buf.data()) >= 0, "HDF5: cannot write attribute ", name);
}

template <class T>
T read_attr_num(hid_t loc, const char* name, hid_t type, const std::string& file) {
  Hid a(H5Aopen(loc, name, H5P_DEFAULT), H5Aclose);
  FT_CHECK(a >= 0, file, ": training state has no attribute '", name, "'");
  T v{};
  FT_CHECK(H5Aread(a, type, &v) >= 0, file, ": cannot read attribute '", name, "'");
  return v;
}
std::string read_attr_str(hid_t loc, const char* name, const std::string& file) {
  Hid a(H5Aopen(loc, name, H5P_DEFAULT), H5Aclose);
  FT_CHECK(a >= 0, file, ": training state has no attribute '", name, "'");
  Hid t(H5Aget_type(a), H5Tclose);
  FT_CHECK(H5Tget_class(t) == H5T_STRING, file, ": attribute '", name, "' is not a string");
  size_t n = H5Tget_size(t);
  std::string s(n, '\0');
  Hid mt(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(mt, n);
  FT_CHECK(H5Aread(a, mt, s.data()) >= 0, file, ": cannot read attribute '", name, "'");
  while (!s.empty() && s.back() == '\0') s.pop_back();
  return s;
}

void write_group(hid_t file, const char* group, const std::map<std::string, Tensor>& ts) {
  Hid g(H5Gcreate2(file, group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
  FT_CHECK(g >= 0, "HDF5: cannot create group ", group);
  for (auto& [name, t] : ts) {
    Tensor c = t.to(DType::F32).contiguous();
    std::vector<hsize_t> dims(c.shape().begin(), c.shape().end());
    Hid sp(dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(int(dims.size()), dims.data(), nullptr), H5Sclose);
    Hid d(H5Dcreate2(g, name.c_str(), H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
    FT_CHECK(d >= 0, "HDF5: cannot create dataset ", group, "/", name);
    FT_CHECK(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, c.raw()) >= 0, "HDF5: cannot write ", group, "/", name, " (disk full?)");
  }
}

struct IterCtx { std::vector<std::string> names; };
herr_t collect(hid_t, const char* name, const H5L_info_t*, void* op) {
  static_cast<IterCtx*>(op)->names.emplace_back(name);
  return 0;
}

std::map<std::string, Tensor> read_group(hid_t file, const char* group, const std::string& path) {
  std::map<std::string, Tensor> out;
  Hid g(H5Gopen2(file, group, H5P_DEFAULT), H5Gclose);
  FT_CHECK(g >= 0, path, ": training state has no group '", group, "'");
  IterCtx ctx;
  H5Literate(g, H5_INDEX_NAME, H5_ITER_NATIVE, nullptr, collect, &ctx);
  for (auto& name : ctx.names) {
    Hid d(H5Dopen2(g, name.c_str(), H5P_DEFAULT), H5Dclose);
    FT_CHECK(d >= 0, path, ": cannot open dataset ", group, "/", name);
    Hid sp(H5Dget_space(d), H5Sclose);
    int nd = H5Sget_simple_extent_ndims(sp);
    FT_CHECK(nd >= 0 && nd <= 8, path, ": dataset ", group, "/", name, " has a bad shape");
    std::vector<hsize_t> dims(static_cast<size_t>(nd));
    H5Sget_simple_extent_dims(sp, dims.data(), nullptr);
    Shape shape(dims.begin(), dims.end());
    Tensor t = Tensor::empty(shape);
    FT_CHECK(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw()) >= 0, path, ": cannot read dataset ", group, "/", name, " (file truncated?)");
    out[name] = t;
  }
  return out;
}

}  // namespace

void save_training_state(const std::string& path, const TrainingState& st) {
  H5Quiet quiet;
  replace_file_atomic(path, [&](const std::string& tmp) {
    Hid f(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    FT_CHECK(f >= 0, "cannot create '", tmp, "': check that the directory exists, is writable and has space");
    try {
      write_attr_str(f, "format", "ft-training-state");
      write_attr_i64(f, "version", 2);
      write_attr_i64(f, "step", st.step);
      write_attr_i64(f, "optimizer_steps", st.optimizer_steps);
      write_attr_u64(f, "rng_seed", st.rng.seed);
      write_attr_u64(f, "rng_counter", st.rng.counter);
      write_attr_str(f, "settings", st.settings.dump());
      write_attr_str(f, "data", st.data.dump());
      write_attr_str(f, "extra", st.extra.dump());
      write_attr_str(f, "run", st.run.dump());
      write_attr_str(f, "identity", st.identity.dump());
      write_group(f, "params", st.params);
      write_group(f, "optimizer", st.optimizer);
      FT_CHECK(H5Fflush(f, H5F_SCOPE_GLOBAL) >= 0, "HDF5: flush of '", tmp, "' failed (disk full?)");
    } catch (const Error& e) {
      throw Error(cat("saving training state '", tmp, "' failed: ", e.what()));
    }
  });
}

namespace {
TrainingState read_state(const std::string& path, bool tensors) {
  H5Quiet quiet;
  FT_CHECK(fs::exists(path), "training state '", path, "' does not exist");
  FT_CHECK(H5Fis_hdf5(path.c_str()) > 0, path, ": not an HDF5 file (truncated or corrupt training state)");
  Hid f(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  FT_CHECK(f >= 0, path, ": cannot open as HDF5 (truncated or corrupt training state)");
  TrainingState st;
  FT_CHECK(read_attr_str(f, "format", path) == "ft-training-state", path, ": not an ft training state");
  st.step = read_attr_num<int64_t>(f, "step", H5T_NATIVE_INT64, path);
  st.optimizer_steps = read_attr_num<int64_t>(f, "optimizer_steps", H5T_NATIVE_INT64, path);
  st.rng.seed = read_attr_num<uint64_t>(f, "rng_seed", H5T_NATIVE_UINT64, path);
  st.rng.counter = read_attr_num<uint64_t>(f, "rng_counter", H5T_NATIVE_UINT64, path);
  try {
    st.settings = nlohmann::json::parse(read_attr_str(f, "settings", path));
    st.data = nlohmann::json::parse(read_attr_str(f, "data", path));
    st.extra = nlohmann::json::parse(read_attr_str(f, "extra", path));
    if (H5Aexists(f, "run") > 0) st.run = nlohmann::json::parse(read_attr_str(f, "run", path));
    if (H5Aexists(f, "identity") > 0) st.identity = nlohmann::json::parse(read_attr_str(f, "identity", path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(cat(path, ": corrupt JSON attribute in training state: ", e.what()));
  }
  if (tensors) {
    st.params = read_group(f, "params", path);
    st.optimizer = read_group(f, "optimizer", path);
  }
  return st;
}
}  // namespace

TrainingState load_training_state(const std::string& path) { return read_state(path, true); }
TrainingState read_training_state_header(const std::string& path) { return read_state(path, false); }

}  // namespace ft
