// Threads (docs/autograd.md, "Threads"): independent graphs are built and
// backpropagated in parallel, and give the same bits as on one thread; a leaf
// shared by graphs on several threads accumulates every pass under its lock.
// The graphs are the least-squares loss built from the standard plugins:
//   L = reduce.sum(elementwise.square(elementwise.sub(y, linalg.mv(A, x))))
// Run under ThreadSanitizer as docs/autograd.md describes.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <opforge/opforge.hpp>

using opforge::DType;
using opforge::OpHandle;
using opforge::Tensor;
using V = std::vector<double>;

namespace {

struct Ops {
  OpHandle mv = opforge::op("linalg.mv");
  OpHandle sub = opforge::op("elementwise.sub");
  OpHandle square = opforge::op("elementwise.square");
  OpHandle sum = opforge::op("reduce.sum");
  Tensor loss(const Tensor& A, const Tensor& x, const Tensor& y) const {
    return sum({square({sub({y, mv({A, x})})})});
  }
};

bool same_bits(const V& a, const V& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}

// One thread's problem: A [m, n], x [n] (requires grad), y [m], from seeds.
struct Problem {
  Tensor A, x, y;
  explicit Problem(int t) {
    const auto s = static_cast<std::uint64_t>(t);
    A = Tensor::randn({24, 7}, DType::Float64, 1000 + s);
    x = Tensor::randn({7}, DType::Float64, 2000 + s).requires_grad_();
    y = Tensor::randn({24}, DType::Float64, 3000 + s);
  }
};

}  // namespace

TEST_CASE("threads: 8 threads x 1,000 lstsq forward+backward passes match one thread bit for bit", "[threads]") {
  const int threads = 8, passes = 1000;
  const Ops ops;
  // The single-threaded reference for each thread's problem.
  std::vector<V> ref_grad(threads);
  std::vector<double> ref_loss(threads);
  for (int t = 0; t < threads; ++t) {
    Problem p(t);
    Tensor L = ops.loss(p.A, p.x, p.y);
    ref_loss[static_cast<std::size_t>(t)] = L.item();
    L.backward();
    ref_grad[static_cast<std::size_t>(t)] = p.x.grad().to_vector();
  }
  // Different problems give different gradients (the comparison below means something).
  REQUIRE_FALSE(same_bits(ref_grad[0], ref_grad[1]));

  std::atomic<int> mismatches{0}, errors{0}, done{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      try {
        const Problem p(t);  // each thread its own A, x, y
        const auto k = static_cast<std::size_t>(t);
        while (!go.load()) std::this_thread::yield();
        for (int i = 0; i < passes; ++i) {
          p.x.zero_grad();
          Tensor L = ops.loss(p.A, p.x, p.y);
          const double l = L.item();
          if (std::memcmp(&l, &ref_loss[k], sizeof l) != 0) ++mismatches;
          L.backward();
          if (!same_bits(p.x.grad().to_vector(), ref_grad[k])) ++mismatches;
          ++done;
        }
      } catch (...) {
        ++errors;
      }
    });
  }
  go = true;
  for (auto& th : pool) th.join();
  CHECK(errors == 0);
  CHECK(mismatches == 0);
  CHECK(done == threads * passes);
}

TEST_CASE("threads: 4 threads x 500 backward passes into one shared leaf W give 2,000 x the single-pass gradient",
          "[threads]") {
  const int threads = 4, passes = 500;
  const Ops ops;
  // Small integers: every gradient entry is an integer, so 2,000 of them add up
  // exactly whatever the order the threads' passes land in.
  Tensor W = Tensor::from_values({1, 2, 0, -1, 3, 1, 2, -2, 1, 0, 1, 1}, {4, 3}).requires_grad_();
  const V xv{1, -1, 2};
  const V yv{3, 0, -2, 2};
  ops.loss(W, Tensor::from_values(xv), Tensor::from_values(yv)).backward();
  const V single = W.grad().to_vector();
  // dL/dW = -2 (y - W x) xᵀ; W x = [-1, -2, 6, 1], r = [4, 2, -8, 1]
  REQUIRE(single == V{-8, 8, -16, -4, 4, -8, 16, -16, 32, -2, 2, -4});

  for (int round = 0; round < 3; ++round) {  // a lost update is a race: give it a few chances
    CAPTURE(round);
    W.zero_grad();
    std::atomic<int> errors{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&] {
        try {
          const Tensor x = Tensor::from_values(xv), y = Tensor::from_values(yv);  // this thread's graph
          while (!go.load()) std::this_thread::yield();
          for (int i = 0; i < passes; ++i) ops.loss(W, x, y).backward();
        } catch (...) {
          ++errors;
        }
      });
    }
    go = true;
    for (auto& th : pool) th.join();
    CHECK(errors == 0);
    REQUIRE(W.grad().defined());
    const V g = W.grad().to_vector();
    REQUIRE(g.size() == single.size());
    for (std::size_t i = 0; i < g.size(); ++i) {
      CAPTURE(i);
      CHECK(g[i] == threads * passes * single[i]);
    }
  }
  CHECK(W.is_leaf());
  CHECK(W.to_vector() == V{1, 2, 0, -1, 3, 1, 2, -2, 1, 0, 1, 1});  // W itself is only read
}

// A non-leaf two graphs share is backpropagated by one thread at a time: a pass that
// reaches a node another thread's pass holds is refused (before it has run anything),
// where it used to reset that node's fields under the other pass (heap corruption).
// Every pass either completes or is refused whole: W.grad is the completed passes'.
TEST_CASE("threads: passes on 4 threads through a shared non-leaf complete or are refused, never corrupt",
          "[threads]") {
  const int threads = 4, passes = 200;
  const OpHandle mul = opforge::op("elementwise.mul"), exp = opforge::op("elementwise.exp"),
                 log = opforge::op("elementwise.log"), sum = opforge::op("reduce.sum");
  Tensor W = Tensor::ones({20000}).requires_grad_();
  const Tensor two = Tensor::scalar(2.0), one = Tensor::scalar(1.0);
  const Tensor h = log({exp({mul({W, two})})});  // 2 W, through three shared nodes: dh/dW = 2
  std::atomic<int> completed{0}, refused{0}, other{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      while (!go.load()) std::this_thread::yield();
      for (int i = 0; i < passes; ++i) {
        try {
          sum({mul({h, one})}).backward(Tensor(), /*retain_graph=*/true);
          ++completed;
        } catch (const opforge::AutogradError& e) {
          const std::string m = e.what();
          if (m.find("is being backpropagated by a pass on another thread") != std::string::npos) ++refused;
          else ++other;
        } catch (...) {
          ++other;
        }
      }
    });
  }
  go = true;
  for (auto& th : pool) th.join();
  CHECK(other == 0);
  CHECK(completed + refused == threads * passes);
  CHECK(completed > 0);
  INFO(completed << " completed, " << refused << " refused");
  const V g = W.grad().to_vector();
  for (double v : g) REQUIRE(v == 2.0 * completed);
  // Nothing stays claimed: one more pass on this thread runs.
  W.zero_grad();
  sum({h}).backward(Tensor(), true);
  CHECK(W.grad().to_vector()[0] == 2.0);
}

TEST_CASE("threads: 2 threads x 20 passes of a large lstsq (kernels parallel inside each op) match one thread",
          "[threads]") {
  // m = 100,000 rows: the elementwise and reduce kernels split their loops over
  // oneTBB workers, and OpenBLAS may use its own threads for mv, while two user
  // threads run graphs at the same time. The kernels' chunking does not depend
  // on who runs a chunk, so the bits must not change.
  const int threads = 2, passes = 20;
  const std::int64_t m = 100000, n = 8;
  const Ops ops;
  const Tensor A = Tensor::randn({m, n}, DType::Float64, 7);
  const Tensor y = Tensor::randn({m}, DType::Float64, 8);
  Tensor x0 = Tensor::randn({n}, DType::Float64, 9).requires_grad_();
  Tensor L0 = ops.loss(A, x0, y);
  const double ref_loss = L0.item();
  L0.backward();
  const V ref_grad = x0.grad().to_vector();

  std::atomic<int> mismatches{0}, errors{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      try {
        Tensor x = Tensor::randn({n}, DType::Float64, 9).requires_grad_();  // A and y are shared, read only
        for (int i = 0; i < passes; ++i) {
          x.zero_grad();
          Tensor L = ops.loss(A, x, y);
          const double l = L.item();
          if (std::memcmp(&l, &ref_loss, sizeof l) != 0) ++mismatches;
          L.backward();
          if (!same_bits(x.grad().to_vector(), ref_grad)) ++mismatches;
        }
      } catch (...) {
        ++errors;
      }
    });
  }
  for (auto& th : pool) th.join();
  CHECK(errors == 0);
  CHECK(mismatches == 0);
}
