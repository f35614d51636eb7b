#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <string>
#include <utility>

#include <sluice/engine/detail/cell/cell_base.hpp>
#include <sluice/engine/handler.hpp>
#include <sluice/engine/options.hpp>
#include <sluice/engine/time.hpp>

namespace sluice::detail {

/// The restart part of a cell (engine/DESIGN.md 12, whose numbered steps the comments follow):
/// the policy, the handler a restart copies, the restarts within the window, and the steps that
/// replace a failed handler by a fresh copy while its subscriptions stay. A mixin over the cell
/// `C` (CRTP): the cell calls handler_failed from invoke's catch and may_restart / restart when
/// the stage stops itself; the sides reset their handler-facing state through resubscribe_* and
/// restore_demand.
template <class C, class Handler>
class Supervisor {
 public:
  /// Gives this instance a restart policy and the handler a restart copies (HandlerCells::make).
  /// Before the run starts.
  void supervise(RestartOptions policy, std::shared_ptr<const Handler> prototype) {
    restart_ = policy;
    prototype_ = std::move(prototype);
  }

 protected:
  bool supervised() const noexcept { return prototype_ != nullptr; }

  /// A callback of a stage with a restart policy threw (inside invoke's catch).
  void handler_failed(std::exception_ptr e) {
    if (restarting_) {  // the new handler failed while restarting: restart() goes round again
      if (!failed_again_) failed_again_ = std::move(e);
      return;
    }
    if (refused_ && e == refused_) {  // a resume refused: decided already, it escalates
      refused_ = nullptr;
      std::rethrow_exception(e);
    }
    auto reason = Reason::error(what_of(e));
    if (!may_restart(reason)) std::rethrow_exception(e);  // escalates: fail(), as without one
    restart(std::move(reason));
  }

  /// Step 1: the policy covers this stop (a failure, or with `always` a normal stop while an
  /// input is open, not a source's), and the restarts within the window leave room for one more.
  bool may_restart(const Reason& reason) {
    auto& c = self();
    if (!prototype_ || c.phase_ >= Phase::stopping || c.run_.cancel_requested()) return false;
    if (!reason.is_error() && (reason.kind != Reason::Kind::normal ||  // shutdown, refused: the
                               restart_.restart != Restart::always ||  // engine's, not its own
                               !c.has_open_input()))
      return false;
    const auto now = c.run_.clock().now();
    while (!restarts_at_.empty() && now - restarts_at_.front() >= restart_.restart_window)
      restarts_at_.pop_front();
    return restarts_at_.size() < static_cast<std::size_t>(restart_.max_restarts);
  }

  /// Resume (Context::resume_after): a failure that cost `lost` events and not the handler's
  /// state. Step 1 decides as for a restart (otherwise `e` is rethrown: invoke's catch then
  /// comes to the same decision, so the stage fails); the events are counted lost, the failure
  /// counts toward the intensity and in `resumes`, and is logged; the handler stays.
  void resume(std::exception_ptr e, std::uint64_t lost) {
    auto& c = self();
    if (restarting_) std::rethrow_exception(e);  // the new handler failed: step 7 decides
    const auto reason = Reason::error(what_of(e));
    if (!may_restart(reason)) {
      // handler_failed escalates it without deciding again (time moves on); without a policy
      // invoke rethrows it and nothing is kept.
      if (supervised()) refused_ = e;
      std::rethrow_exception(e);
    }
    restarts_at_.push_back(c.run_.clock().now());
    c.lost_.add(lost);
    c.record_resume();
    c.run_.log(LogLevel::warning, "stage '" + c.name_ + "' resumed " + intensity() +
                                      " after: " + reason.message + " (" + std::to_string(lost) +
                                      " events lost)");
  }

  /// Steps 2-7: the failed instance's handler replaced by a fresh copy, its subscriptions kept.
  /// A failure of the new handler in steps 5-6 goes round again (step 1 decides), so a handler
  /// that always fails escalates once the intensity is spent.
  void restart(Reason reason) {
    if constexpr (handler::Restartable<Handler>) restart_as(std::move(reason));
  }

  // Read and written by the sides (ConsumerSide counts a call's inputs; both sides stop telling
  // a new handler of subscriptions once it has failed again).
  std::uint64_t inputs_in_call_ = 0;  // the inputs of the handle_events call under way
  bool restarting_ = false;           // steps 2-7 are under way
  std::exception_ptr failed_again_;   // the new handler's failure during steps 5-6

 private:
  C& self() { return static_cast<C&>(*this); }

  static std::string what_of(const std::exception_ptr& e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      return x.what();
    } catch (...) {
      return "unknown exception";
    }
  }

  /// "(k of at most m within w ms)": the restarts and resumes within the window.
  std::string intensity() const {
    return "(" + std::to_string(restarts_at_.size()) + " of at most " +
           std::to_string(restart_.max_restarts) + " within " +
           std::to_string(
               std::chrono::duration_cast<std::chrono::milliseconds>(restart_.restart_window)
                   .count()) +
           " ms)";
  }

  void restart_as(Reason reason) {
    auto& c = self();
    restarting_ = true;
    struct Reset {
      bool& b;
      ~Reset() { b = false; }
    } reset{restarting_};
    // 2: the failed call's inputs, counted once the restart has worked (if it escalates, they
    // stay sent and not received on their edge, which counts them then).
    const auto inputs = std::exchange(inputs_in_call_, 0);
    for (;;) {
      const auto now = c.run_.clock().now();
      restarts_at_.push_back(now);
      Handler fresh(*prototype_);  // may throw (memory): the stage then fails
      c.stop_request_.reset();     // what the failed handler asked for goes with it
      std::uint64_t lost = 0;
      if constexpr (C::has_out) {
        auto& staged = c.out_.staged();
        if (inputs == 0) lost = staged.size();  // what a call without inputs emitted
        staged.clear();                         // (a handle_events call's: its inputs count)
        lost += c.drop_buffer();
      }
      if constexpr (handler::DiscardsHeld<Handler>) {  // what the handler held (a batch's)
        try {
          lost += static_cast<std::uint64_t>(c.handler_.discard_held());
        } catch (...) {  // the old handler goes regardless
        }
      }
      c.lost_.add(lost);
      if constexpr (handler::HandlesTerminate<Handler>) {  // 3
        try {
          c.handler_.handle_terminate(reason);
        } catch (...) {  // the old instance is gone regardless
        }
      }
      c.cancel_timers();
      std::destroy_at(&c.handler_);  // 4 (Restartable: the move does not throw)
      std::construct_at(&c.handler_, std::move(fresh));
      const auto said = reason.is_error() ? reason.message : std::string("normal");
      c.record_restart(said, now);
      c.run_.log(LogLevel::warning,  // the name carries the instance's #i
                 "stage '" + c.name_ + "' restarted " + intensity() + " after: " + said);
      failed_again_ = nullptr;
      c.resubscribe_subscriptions();  // 5
      c.resubscribe_subscribers();
      if (!failed_again_) c.restore_demand();  // 6
      if (!failed_again_) {
        c.lost_.add(inputs);
        // A handler that finishes itself learns of its inputs' ends from handle_cancel; with
        // none left open it would never hear of one: it is done (section 6, step 1).
        if constexpr (handler::FinishesItself<Handler>)
          if (!c.has_open_input()) c.finish();
        return;
      }
      auto e = std::exchange(failed_again_, nullptr);
      reason = Reason::error(what_of(e));
      if (!may_restart(reason)) std::rethrow_exception(e);  // 7: escalates
    }
  }

  RestartOptions restart_;
  std::shared_ptr<const Handler> prototype_;  // null: no policy
  std::exception_ptr refused_;                // the failure a resume refused, on its way out
  std::deque<TimePoint> restarts_at_;         // the restarts within the window
};

}  // namespace sluice::detail
